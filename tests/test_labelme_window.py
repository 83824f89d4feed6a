"""The real labelme window, started the way `hack label` starts it, driven like a person under Xvfb.

A box drawn with Ctrl+R and two clicks must be autosaved beside its photo, pass `hack check`, and
come out of `hack pack` as the same box; with `--member K/N` labelme must list only that share.
Needs Xvfb and xdotool (`make system-deps`); skips without them. The object is found on the
screen by its colour (a screen grab through PyQt5, which labelme brings), so the clicks do not
depend on labelme's layout.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelme_data import photo

CLASSES = ["fish", "shark"]
OBJECT_COLOR = (220, 30, 30)
PHOTO_SIZE = (640, 480)
TOOLBAR_PX = 110  # labelme's menu and tool bar, above its canvas at 1280x1024
BOX_TOLERANCE_PX = 3.0  # one screen pixel is ~1.2 photo pixels at labelme's fitted zoom
GRAB = ("import sys\n"
        "from PyQt5 import QtWidgets\n"
        "app = QtWidgets.QApplication(sys.argv[:1])\n"
        "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)\n")

for tool in ("Xvfb", "xdotool"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: `make system-deps`)", allow_module_level=True)
pytest.importorskip("labelme", reason="labelme is not installed")
pytest.importorskip("PyQt5.QtWidgets", reason="PyQt5 (labelme's Qt) is not installed")

from labeling import label  # noqa: E402  (after the skips: nothing to import for a skipped module)
from labeling.check import check_labels  # noqa: E402
from labeling.pack import pack_dataset  # noqa: E402
from labeling.workspace import init_workspace  # noqa: E402


def wait_for(what, probe, timeout=30.0, step=0.2, screen=None):
    """probe()'s first truthy value, polled every `step` s; fails the test after `timeout` s
    (with a grab of `screen` to look at)."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            seen = f"; the screen then: {screen.grab_file('timeout.png')}" if screen else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(step)


@pytest.fixture(scope="module")
def display():
    """A private X display (Xvfb), killed at the end whatever happens."""
    for n in range(97, 121):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while xvfb.poll() is None and not Path(f"/tmp/.X11-unix/X{n}").exists() and time.monotonic() < end:
            time.sleep(0.1)
        if xvfb.poll() is None and Path(f"/tmp/.X11-unix/X{n}").exists():
            try:
                yield f":{n}"
            finally:
                xvfb.terminate()
                try:
                    xvfb.wait(5)
                except subprocess.TimeoutExpired:
                    xvfb.kill()
                    xvfb.wait()
            return
        xvfb.kill()  # lost a race for this display, or it never came up: try the next one
        xvfb.wait()
    pytest.skip("no free X display in :97..:120 for Xvfb")


class Screen:
    """xdotool and screen grabs on one X display."""

    def __init__(self, display, scratch):
        self.env = dict(label.labelme_env(), DISPLAY=display, QT_QPA_PLATFORM="xcb",
                        HOME=str(scratch), XDG_CONFIG_HOME=str(scratch / ".config"),
                        XDG_RUNTIME_DIR=str(scratch / "run"))
        (scratch / "run").mkdir(mode=0o700, exist_ok=True)
        self.shot = scratch / "screen.png"

    def xdotool(self, *args):
        out = subprocess.run(["xdotool", *map(str, args)], env=self.env, capture_output=True, text=True, timeout=20)
        return out.stdout.strip() if out.returncode == 0 else ""

    def labelme_window(self):
        """(window id, title) of labelme's main window once it shows a photo, else None."""
        for wid in self.xdotool("search", "--name", r"^Labelme - ").split():
            title = self.xdotool("getwindowname", wid)
            if title.startswith("Labelme - "):
                return wid, title
        return None

    def visible_windows(self):
        # "" and not ".": labelme's label dialog has no WM_NAME of its own
        return self.xdotool("search", "--onlyvisible", "--name", "").split()

    def grab_file(self, name="screen.png") -> Path:
        path = self.shot.with_name(name)
        subprocess.run([sys.executable, "-c", GRAB, str(path)], env=self.env, check=True, timeout=20,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path

    def grab(self) -> np.ndarray:
        return np.asarray(Image.open(self.grab_file()).convert("RGB")).astype(np.int16)

    def find_object(self, top=0):
        """The shown object's screen box (x0, y0, x1, y1), once labelme has painted it whole (below
        screen row `top`: labelme's red Delete File icon lights up when the photo has a JSON)."""
        mask = (np.abs(self.grab() - OBJECT_COLOR).max(axis=-1) < 40)
        mask[:top] = False
        ys, xs = np.nonzero(mask)
        if len(xs) < 400:
            return None
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        return box if mask.sum() > 0.97 * area else None  # a solid rectangle, not a half-painted one

    def click(self, x, y):
        self.xdotool("mousemove", "--sync", x, y)
        time.sleep(0.2)
        self.xdotool("click", "1")
        time.sleep(0.2)


@pytest.fixture
def screen(display, tmp_path):
    home = tmp_path / "home"  # labelme's ~/.labelmerc, Qt settings and log stay in the test
    home.mkdir()
    return Screen(display, home)


def make_workspace(root, boxes):
    """A workspace with one photo per `boxes` entry {"scene/name.jpg": object box}."""
    ws = init_workspace(root, CLASSES)
    for rel, box in boxes.items():
        photo(ws.photos_dir / rel, size=PHOTO_SIZE, box=box, color=OBJECT_COLOR)
    return ws


class Labelme:
    """labelme started from `prepare_labelme`'s command, always ended after the test."""

    def __init__(self, screen, command):
        self.screen = screen
        self.log = open(screen.shot.with_name("labelme.log"), "w")
        self.proc = subprocess.Popen(command, env=screen.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def window(self):
        def shown():
            assert self.proc.poll() is None, f"labelme exited with code {self.proc.returncode}: {self.logged()}"
            return self.screen.labelme_window()
        return wait_for("labelme's window with a photo", shown, screen=self.screen)

    def logged(self):
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_labelme(screen):
    started = []

    def start(command):
        started.append(Labelme(screen, command))
        return started[-1]

    yield start
    for lm in started:
        lm.close()


def stable(probe):
    """A probe that answers only when `probe` gave the same answer twice in a row."""
    last = []

    def twice():
        value = probe()
        previous = last.pop() if last else None
        last.append(value)
        return value if value is not None and value == previous else None
    return twice


def draw_box(screen, wid, label_name):
    """What a person does: Ctrl+R, a click on one corner of the object, a click on the opposite
    corner, the class typed into labelme's label dialog, Enter. Returns the object's screen box."""
    box = wait_for("the photo painted whole and still in labelme's canvas", stable(screen.find_object),
                   screen=screen)
    screen.xdotool("windowfocus", "--sync", wid)
    screen.xdotool("mousemove", "--sync", (box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
    screen.xdotool("key", "ctrl+r")
    time.sleep(0.3)
    screen.click(box[0], box[1])
    screen.xdotool("mousemove", "--sync", (box[0] + box[2]) // 2, (box[1] + box[3]) // 2)  # labelme follows moves
    before = set(screen.visible_windows())
    screen.click(box[2], box[3])
    wait_for("labelme's label dialog", lambda: set(screen.visible_windows()) - before, timeout=10,
             screen=screen)
    time.sleep(0.3)
    screen.xdotool("type", "--delay", "50", label_name)
    time.sleep(0.3)
    screen.xdotool("key", "Return")
    return box


def saved_json(path):
    """labelme's JSON at `path` once it is complete, else None."""
    try:
        return json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def box_of(shape):
    (xa, ya), (xb, yb) = shape["points"]
    return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)


def assert_box_on_object(saved, object_box):
    """labelme saved the box the person drew: around the object (PIL boxes include their last pixel)."""
    x0, y0, x1, y1 = object_box
    expected = (x0, y0, x1 + 1, y1 + 1)
    got = box_of(saved["shapes"][0])
    assert np.allclose(got, expected, atol=BOX_TOLERANCE_PX), f"box {got} is not on the object {expected}"
    assert 0 <= got[0] < got[2] <= PHOTO_SIZE[0] and 0 <= got[1] < got[3] <= PHOTO_SIZE[1]


def test_box_drawn_in_labelme_is_saved_checked_and_packed(tmp_path, screen, start_labelme):
    object_box = (180, 120, 420, 330)
    ws = make_workspace(tmp_path / "ws", {"reef/IMG_0001.jpg": object_box, "reef/IMG_0002.jpg": (50, 60, 200, 160)})
    command, shown = label.prepare_labelme(ws.photos_dir, CLASSES, ws.state_dir)
    assert shown == ["reef/IMG_0001.jpg", "reef/IMG_0002.jpg"]

    labelme = start_labelme(command)
    wid, title = labelme.window()
    first = ws.photos_dir / "reef" / "IMG_0001.jpg"
    assert title.startswith(f"Labelme - {first} [1/2]"), title
    draw_box(screen, wid, "fish")
    json_path = first.with_suffix(".json")
    saved = wait_for(f"labelme's autosave of {json_path.name}", lambda: saved_json(json_path), screen=screen)
    labelme.close()

    assert [s["label"] for s in saved["shapes"]] == ["fish"]
    assert saved["shapes"][0]["shape_type"] == "rectangle"
    assert saved["imageData"] is None
    assert saved["imagePath"] == first.name
    assert (saved["imageWidth"], saved["imageHeight"]) == PHOTO_SIZE
    assert_box_on_object(saved, object_box)
    assert not first.with_name("IMG_0002.json").exists()

    report = check_labels([ws.photos_dir], CLASSES)
    assert report.errors == [], [str(p) for p in report.errors]
    assert [it.json_path for it in report.items] == [json_path]

    from gluoncv.data import RecordFileDetection

    data = tmp_path / "data"
    manifest = pack_dataset([ws.photos_dir], data, CLASSES, val_fraction=0, workers=1, progress=False, report=report)
    assert manifest["splits"]["train"]["images"] == 1 and manifest["splits"]["val"]["images"] == 0
    img, packed = RecordFileDetection(str(data / "train.rec"))[0]
    assert img.shape[:2] == (PHOTO_SIZE[1], PHOTO_SIZE[0])
    assert packed.shape == (1, 5)
    assert np.allclose(packed[0, :4], box_of(saved["shapes"][0]), atol=0.05), (packed, saved["shapes"][0])
    assert packed[0, 4] == CLASSES.index("fish")


def test_member_share_is_all_labelme_lists(tmp_path, screen, start_labelme):
    boxes = {"reef/a.jpg": (40, 40, 200, 150), "reef/b.jpg": (300, 200, 560, 420),
             "tank/a.jpg": (100, 250, 300, 400), "tank/b.jpg": (350, 60, 600, 260)}
    ws = make_workspace(tmp_path / "ws", boxes)
    photos = label.list_photos(ws.photos_dir)
    share = label.member_share(sorted(photos), 2, 2)
    others = [p for p in photos if p not in share]
    command, shown = label.prepare_labelme(ws.photos_dir, CLASSES, ws.state_dir, member=(2, 2))
    assert shown == share == ["reef/b.jpg", "tank/b.jpg"]

    labelme = start_labelme(command)
    wid, title = labelme.window()
    assert title.startswith(f"Labelme - {ws.photos_dir / share[0]} "), title
    assert title.endswith(f"[1/{len(share)}]"), f"labelme does not list share 2 of 2 alone: {title}"
    draw_box(screen, wid, "shark")
    labeled = wait_for("labelme's autosave", lambda: [p for p in photos
                                                     if saved_json((ws.photos_dir / p).with_suffix(".json"))],
                       screen=screen)
    labelme.close()

    assert labeled == [share[0]], f"labeled {labeled}, share 2 of 2 is {share}"
    saved = saved_json((ws.photos_dir / share[0]).with_suffix(".json"))
    assert [s["label"] for s in saved["shapes"]] == ["shark"]
    assert_box_on_object(saved, boxes[share[0]])  # the box is on this photo's object: it was the one shown
    assert not any((ws.photos_dir / p).with_suffix(".json").exists() for p in others)


def test_prefilled_file_opens_with_its_boxes_and_editing_keeps_the_marks(tmp_path, screen, start_labelme):
    from labeling.labelme_io import AUTO_FLAG, PREFILL_KEY, REVIEWED_FLAG, merge_machine_boxes, new_labelme_document

    object_box = (180, 120, 420, 330)
    machine_box = (30, 30, 150, 100)  # away from the object, on the grey background
    ws = make_workspace(tmp_path / "ws", {"reef/IMG_0001.jpg": object_box})
    first = ws.photos_dir / "reef" / "IMG_0001.jpg"
    doc, _, _ = merge_machine_boxes(new_labelme_document(first.name, *PHOTO_SIZE),
                                    [{"label": "shark", "score": 0.87, "bbox": list(machine_box)}], {"model": "run x"})
    json_path = first.with_suffix(".json")
    json_path.write_text(json.dumps(doc), encoding="utf-8")
    command, _ = label.prepare_labelme(ws.photos_dir, CLASSES, ws.state_dir)

    labelme = start_labelme(command)
    wid, _ = labelme.window()
    shown = wait_for("the photo painted whole and still", stable(lambda: screen.find_object(top=TOOLBAR_PX)),
                     screen=screen)
    # the machine box is drawn: its top edge, mapped from photo to screen pixels, is not the grey photo
    scale = (shown[2] + 1 - shown[0]) / (object_box[2] + 1 - object_box[0])
    to_screen = lambda x, y: (round(shown[0] + (x - object_box[0]) * scale), round(shown[1] + (y - object_box[1]) * scale))
    (ex0, ey), (ex1, _) = to_screen(machine_box[0], machine_box[1]), to_screen(machine_box[2], machine_box[1])
    grey = np.abs(screen.grab()[ey - 1:ey + 2, ex0 + 10:ex1 - 10] - 128).max(axis=-1) < 12
    assert not grey.all(axis=0).any(), "labelme does not draw the pre-filled box"

    # a person relabels the machine box (green, a shark: not the red the object is found by): select
    # it, Ctrl+E, type the class, Enter
    cx, cy = to_screen((machine_box[0] + machine_box[2]) / 2, (machine_box[1] + machine_box[3]) / 2)
    screen.xdotool("windowfocus", "--sync", wid)
    screen.click(cx, cy)
    before = set(screen.visible_windows())
    screen.xdotool("key", "ctrl+e")
    wait_for("labelme's label dialog", lambda: set(screen.visible_windows()) - before, timeout=10, screen=screen)
    time.sleep(0.3)
    screen.xdotool("key", "ctrl+a")
    screen.xdotool("type", "--delay", "50", "fish")
    time.sleep(0.3)
    screen.xdotool("key", "Return")
    relabelled = lambda: (lambda d: d if d and d["shapes"] and d["shapes"][0]["label"] == "fish" else None)(
        saved_json(json_path))
    saved = wait_for("labelme's autosave of the relabelled box", relabelled, screen=screen)
    labelme.close()

    assert len(saved["shapes"]) == 1
    s = saved["shapes"][0]
    assert s["flags"] == {AUTO_FLAG: True}, "the relabelled machine box lost its auto flag"
    assert s["description"] == doc["shapes"][0]["description"]
    assert np.allclose(box_of(s), machine_box, atol=0.01)
    assert saved["flags"] == {REVIEWED_FLAG: False} and saved[PREFILL_KEY] == {"model": "run x"}
    assert saved["imageData"] is None
    report = check_labels([ws.photos_dir], CLASSES)
    assert [(it.unreviewed, it.machine, it.untouched) for it in report.items] == [(True, 1, 0)]  # touched now
