"""`hack leaderboard serve`: the projector page, live from the SQLite history.

Stdlib http.server, bound to 127.0.0.1 unless told otherwise. Three fixed routes: ``/`` (a static
page with no data in it), ``/app.js`` (builds the table with createElement/textContent only, so a
team named ``<img src=x onerror=alert(1)>`` is shown as those characters), and ``/api/board``
(the latest run's ranking as JSON, read from the database on each request, read-only). The page
polls the JSON every few seconds, so scores appear as they land, without a reload. A
Content-Security-Policy forbids inline script and any other origin, as a second line of defence.

Example
-------
>>> server = make_server("out/leaderboard.db", port=0)   # port 0: any free port
>>> threading.Thread(target=server.serve_forever, daemon=True).start()
"""
import json
import sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hackathon.judge.history import connect, latest_board, public

CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em 3em;background:#10141a;color:#eee;font-size:1.4em}
table{border-collapse:collapse;width:100%}td,th{padding:.35em .6em;border-bottom:1px solid #333;text-align:right;white-space:nowrap}
td.team,td.msg{white-space:normal;overflow-wrap:anywhere}
td.team,th.team,td.msg{text-align:left}td.msg{white-space:pre-line;font-size:.7em}tr.invalid td{color:#888;font-size:.8em}.tie{color:#f0a040}
.bar{height:.6em;background:#4a7ab5;display:block;margin-top:.2em}#status{color:#888;font-size:.7em}
</style></head>
<body data-refresh-ms="__REFRESH_MS__">
<h1 id="title">Leaderboard</h1>
<table id="board"><thead><tr><th>#</th><th class="team">team</th><th id="metric">score</th><th>95% interval</th>
<th>COCO AP</th><th class="shift">in-scene</th><th class="shift">gap</th><th class="shift">retention</th>
<th class="team">note</th></tr></thead><tbody></tbody></table>
<p id="status">loading…</p>
<script src="/app.js"></script>
</body></html>
"""

APP_JS = r"""
"use strict";
const METRICS = {voc07_map50: "VOC07 mAP@0.5", voc_map50: "VOC mAP@0.5", coco_map: "COCO AP", coco_map50: "COCO AP50"};
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
    const name = METRICS[run.metric] || run.metric;
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
  document.getElementById("status").textContent = run
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
"""


class BoardHandler(BaseHTTPRequestHandler):
    server_version = "hack-leaderboard"
    db_path = None
    refresh_ms = 3000

    def do_GET(self):
        route = self.path.split("?", 1)[0]
        if route == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.replace("__REFRESH_MS__", str(int(self.refresh_ms))))
        elif route == "/app.js":
            self._send(200, "text/javascript; charset=utf-8", APP_JS)
        elif route == "/api/board":
            self._send(200, "application/json", json.dumps(read_board(self.db_path), allow_nan=False))
        else:
            self._send(404, "text/plain; charset=utf-8", "not found")

    def do_HEAD(self):
        self._send(405, "text/plain; charset=utf-8", "")

    def _send(self, code, content_type, text):
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # the projector's terminal stays quiet
        pass


def read_board(db_path):
    """The latest run as public JSON; an empty board when there is no history yet."""
    if not Path(db_path).is_file():
        return {"run": None, "rows": []}
    try:
        with connect(db_path, readonly=True) as db:
            return public(latest_board(db))
    except sqlite3.OperationalError:  # created but not initialised yet, or locked past the timeout
        return {"run": None, "rows": []}


def make_server(db_path, host="127.0.0.1", port=8000, refresh_s=3.0):
    """A ready ThreadingHTTPServer (call serve_forever); port 0 picks a free port."""
    handler = type("Handler", (BoardHandler,), {"db_path": Path(db_path), "refresh_ms": refresh_s * 1000})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(db_path, host="127.0.0.1", port=8000, refresh_s=3.0, echo=print):
    server = make_server(db_path, host, port, refresh_s)
    echo(f"leaderboard on http://{host}:{server.server_address[1]}/ (from {db_path}); Ctrl+C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
