"use strict";
const fmt = (x, d = 3) => (x === null || x === undefined) ? "" : Number(x).toFixed(d);

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;            // data only ever goes in as text
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function render(data) {
  const rows = data.rows || [];
  const run = data.run;
  const shift = rows.some(r => r.in_scene !== null && r.in_scene !== undefined);
  document.querySelectorAll(".shift").forEach(th => { th.style.display = shift ? "" : "none"; });
  if (run) {
    const name = run.metric_name || run.metric;
    document.getElementById("metric").textContent = name;
    document.getElementById("title").textContent = "Leaderboard: " + name;
  }
  const top = Math.max(1e-9, ...rows.map(r => r.score || 0));
  const body = document.createElement("tbody");
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.className = r.status === "ok" ? "ok" : "invalid";
    tr.dataset.team = r.team;
    const rank = cell(tr, r.rank === null ? "" : String(r.rank));
    if (r.tie_above) {
      const tie = document.createElement("span");
      tie.className = "tie"; tie.textContent = " ≈"; tie.title = "statistical tie with the team above";
      rank.appendChild(tie);
    }
    const team = cell(tr, r.team, "team");
    if (r.status === "ok") {
      const bar = document.createElement("span");
      bar.className = "bar"; bar.style.width = (100 * (r.score || 0) / top).toFixed(1) + "%";
      team.appendChild(bar);
    }
    cell(tr, fmt(r.score, 4));
    cell(tr, r.lo === null ? "" : fmt(r.lo) + " – " + fmt(r.hi));
    cell(tr, fmt(r.coco));
    for (const k of ["in_scene", "gap", "retention"]) {
      const td = cell(tr, fmt(r[k]));
      td.style.display = shift ? "" : "none";
    }
    cell(tr, r.status === "ok" ? (r.message || "") : r.status + ": " + (r.message || ""), "msg");
    body.appendChild(tr);
  }
  const table = document.getElementById("board");
  table.replaceChild(body, table.tBodies[0]);
  const when = run ? new Date(run.last_scored_at * 1000).toLocaleTimeString() : "";
  document.getElementById("status").textContent = data.error ? data.error : run
    ? `${rows.filter(r => r.status === "ok").length} teams scored on ${run.n_images} test images` +
      (run.finished_at ? "" : " (scoring in progress)") + `, last scored ${when}; ≈: statistical tie with the team above.`
    : "No scores yet: run `hack score`.";
}

async function refresh() {
  try {
    const response = await fetch("/api/board", {cache: "no-store"});
    if (response.ok) render(await response.json());
  } catch (e) {
    document.getElementById("status").textContent = "server unreachable, retrying…";
  }
}

refresh();
setInterval(refresh, Number(document.body.dataset.refreshMs) || 3000);
