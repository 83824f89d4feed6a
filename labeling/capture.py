"""`hack capture`: a page on the laptop that team members open on their phones to send photos in.

The page (capture_page.html) sends one photo per request, so a dropped connection loses at most
the photo in flight. Each upload is streamed to a private temp file, imported with
`labeling.importing.import_file` (the same import as `hack import`: upright, HEIC, resized,
metadata-free, duplicates skipped), and the temp file removed. Bodies are received concurrently;
imports are serialized by a lock because the workspace index is one file (a `hack import` in
another process takes turns with them through the workspace's file lock, labeling/importing.py).
A retried upload is stored once: the page sends the same idempotency key again, and the import
skips the same bytes.

Only the team gets in: a random token in the printed address is required on every request.
Sizes are checked from Content-Length before a byte of the body is read.
"""
import hmac
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display, write_json_atomic
from labeling.importing import import_file
from labeling.workspace import SCENE_RE, Workspace

MAX_MB = 40  # a 200 MP HEIC is ~30 MB; a phone JPEG 3-12 MB
MAX_FILES = 2000  # uploads per run: a team shoots a few hundred
MEMBER_RE = re.compile(r"\w[\w .'-]{0,31}")  # a first name or nickname, any script
KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
SCENE_MAX = 64
CHUNK = 1 << 16
SOCKET_TIMEOUT = 60  # seconds a phone may stall mid-upload before its connection is dropped
PAGE = Path(__file__).with_name("capture_page.html")


def display_name(raw) -> str:
    """A file name as the phone sent it, fit to show and to log: the last path part, no control or
    bidi characters, at most 100 characters. Never used as a path."""
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", raw or ""))[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    return " ".join(name.split())[:100] or "photo"


def check_member(raw) -> str:
    member = " ".join(unicodedata.normalize("NFC", raw or "").split())
    if not MEMBER_RE.fullmatch(member):
        raise KitError(f"name {member!r}: use letters, digits, spaces, '-' or '.', up to 32, e.g. 'Ana'.")
    return member


def check_scene(raw) -> str:
    scene = unicodedata.normalize("NFC", raw or "")
    if len(scene) > SCENE_MAX or not SCENE_RE.fullmatch(scene):  # fullmatch: '$' would let a newline in
        raise KitError(f"scene {scene!r}: use letters, digits, '-', '_' or '.', e.g. 'tank-a'.")
    return scene


class CaptureStation:
    """What the request threads share: the workspace, the token, the limits, the lock and the tallies.

    >>> station = CaptureStation(Workspace(Path("fishy")))       # doctest: +SKIP
    >>> server = make_server(station, "127.0.0.1", 0)            # doctest: +SKIP
    """

    def __init__(self, ws: Workspace, token=None, max_bytes=MAX_MB << 20, max_files=MAX_FILES,
                 max_side=1024, echo=print):
        self.ws, self.max_bytes, self.max_files, self.max_side = ws, max_bytes, max_files, max_side
        self.token = token or secrets.token_urlsafe(16)
        self.echo = echo
        self.log_file = ws.state_dir / "capture.json"  # who sent which photo: counts survive a restart
        self._tmp = tempfile.TemporaryDirectory(prefix="hack-capture-")
        self.tmp_dir = Path(self._tmp.name)
        self._import_lock = threading.Lock()  # one import at a time: the index is one file
        self._lock = threading.Lock()  # the tallies below
        self._results = {}  # idempotency key -> the answer given, replayed on a retry
        self._reserved = 0  # uploads counted against max_files
        self.dropped = 0
        self.closed = False
        self._log = self._read_log()

    def authorized(self, token) -> bool:
        return hmac.compare_digest((token or "").encode("utf-8", "replace"), self.token.encode())

    def reserve(self) -> bool:
        with self._lock:
            if self._reserved >= self.max_files:
                return False
            self._reserved += 1
            return True

    def release(self, dropped=False):
        """Give back an upload's count: its connection dropped (a retry must not be refused) or it was a replay."""
        with self._lock:
            self._reserved -= 1
            self.dropped += dropped

    def new_temp(self) -> Path:
        fd, path = tempfile.mkstemp(suffix=".upload", dir=self.tmp_dir)  # a fresh name; the phone's is never used
        os.close(fd)
        return Path(path)

    def import_upload(self, tmp: Path, name, member, scene, key=None):
        """Import one received file; returns (http status, answer dict). A known key replays its answer."""
        with self._import_lock:
            if self.closed:
                return 503, {"status": "failed", "message": "the capture station is stopping"}
            if key and key in self._results:
                self.release()  # the first upload of this key was counted
                return self._results[key]
            summary = import_file(self.ws, tmp, scene=scene, max_side=self.max_side, name=name,
                                  stored_name=f"{member}_{name}")
            code, answer = _answer(summary, name)
            answer.update(name=name, member=member, scene=scene)
            if answer["status"] == "accepted":
                with self._lock:  # status() reads the log from other threads
                    self._log[answer["photo"]] = {"member": member, "scene": scene, "time": _now()}
                    log = dict(self._log)
                write_json_atomic(self.log_file, {"version": 1, "photos": log})
            if key:
                self._results[key] = (code, answer)
        self.echo(f"{member} -> {scene}: {name} {answer['status']}"
                  + (f" ({answer['photo']})" if answer.get("photo") else f": {answer['message']}"))
        return code, answer

    def status(self) -> dict:
        with self._lock:
            log, left, dropped = dict(self._log), self.max_files - self._reserved, self.dropped
        # photos a team member deleted (blurred, wrong scene) no longer count
        per = Counter((e["member"], e["scene"]) for rel, e in log.items() if (self.ws.photos_dir / rel).is_file())
        on_disk = {s: sum(1 for p in (self.ws.photos_dir / s).glob("*.jpg")) for s in self.ws.scenes()}
        return {"workspace": self.ws.root.name, "scenes": sorted(on_disk), "photos_per_scene": on_disk,
                "sent": [{"member": m, "scene": s, "photos": n} for (m, s), n in sorted(per.items())],
                "max_bytes": self.max_bytes, "uploads_left": left, "dropped": dropped}

    def close(self):
        """Let an import in progress finish, refuse the ones after it, remove the temp folder."""
        with self._import_lock:
            self.closed = True
        self._tmp.cleanup()

    def _read_log(self) -> dict:
        try:
            photos = json.loads(self.log_file.read_text("utf-8")).get("photos", {})
            return {k: v for k, v in photos.items() if isinstance(v, dict) and "member" in v and "scene" in v}
        except (OSError, ValueError, AttributeError):
            return {}


def _answer(summary, name):
    if summary.imported:
        return 200, {"status": "accepted", "photo": summary.imported[0],
                     "message": f"stored as {summary.imported[0]}"}
    if summary.exact_duplicates:
        return 200, {"status": "duplicate", "photo": None,
                     "message": f"already here as {summary.exact_duplicates[0][1]} (same file)"}
    if summary.near_duplicates:
        return 200, {"status": "duplicate", "photo": None,
                     "message": f"almost the same as {summary.near_duplicates[0][1]} (a burst shot?); skipped"}
    message = summary.failed[0][1] if summary.failed else f"{name}: not imported"
    return 415, {"status": "refused", "photo": None, "message": message}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class CaptureHandler(BaseHTTPRequestHandler):
    server_version = "hack-capture"
    timeout = SOCKET_TIMEOUT
    station: CaptureStation  # set by make_server

    def do_GET(self):
        query = self._authorize()
        if query is None:
            return
        path = urlsplit(self.path).path
        if path == "/":
            nonce = secrets.token_urlsafe(12)
            page = PAGE.read_text("utf-8").replace("__NONCE__", nonce)
            csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                   "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            self._send(200, page.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": csp})
        elif path == "/status":
            self._json(200, self.station.status())
        else:
            self._json(404, {"status": "error", "message": "no such page"})

    def do_POST(self):
        query = self._authorize()
        if query is None:
            return
        if urlsplit(self.path).path != "/upload":
            return self._json(404, {"status": "error", "message": "no such page"})
        self.close_connection = True  # the body may stay unread below: never reuse this connection
        try:
            member, scene = check_member(query.get("member")), check_scene(query.get("scene"))
        except KitError as e:
            return self._json(400, {"status": "refused", "message": str(e)})
        name, key = display_name(query.get("name")), query.get("key")
        if key is not None and not KEY_RE.fullmatch(key):
            return self._json(400, {"status": "refused", "message": "bad upload key; reload the page"})
        size = self._content_length()
        if size is None:
            return
        if not self.station.reserve():
            return self._json(429, {"status": "refused", "message": f"the capture station took its "
                                    f"{self.station.max_files} uploads; restart it with a larger --max-files"})
        try:
            tmp = self.station.new_temp()
        except OSError:  # the station is stopping: its temp folder is gone
            self.station.release()
            return self._json(503, {"status": "failed", "message": "the capture station is stopping"})
        try:
            if not self._receive(tmp, size):
                self.station.release(dropped=True)
                self.station.echo(f"{member}: connection dropped while sending {name}; nothing stored")
                return
            code, answer = self.station.import_upload(tmp, name, member, scene, key)
        except Exception:  # a bug: the phone gets a message, the terminal the traceback
            traceback.print_exc()
            return self._json(500, {"status": "error", "message": "the laptop failed on this photo; see its terminal"})
        finally:
            tmp.unlink(missing_ok=True)
        self._json(code, answer)

    def _authorize(self):
        """The query as a dict, or None after answering 403 (nothing of the page in it)."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        if not self.station.authorized(query.get("t")):
            self.close_connection = True
            self._send(403, b"forbidden\n", "text/plain; charset=utf-8")
            return None
        return query

    def _content_length(self):
        """The body's size from its header, or None after answering 411/413/400."""
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or raw is None or not re.fullmatch(r"[0-9]{1,15}", raw.strip()):
            self._json(411, {"status": "refused", "message": "send the photo with a Content-Length"})
            return None
        size = int(raw)
        if size > self.station.max_bytes:
            self._json(413, {"status": "refused", "message": f"{size / 2**20:.1f} MB is more than the "
                             f"{self.station.max_bytes / 2**20:.3g} MB a photo may be; send a smaller one"})
            return None
        if size == 0:
            self._json(400, {"status": "refused", "message": "the file is empty (0 bytes)"})
            return None
        return size

    def _receive(self, tmp: Path, size) -> bool:
        """Stream `size` bytes of body to `tmp`; False when the phone went away before the end."""
        left = size
        try:
            with open(tmp, "wb") as f:
                while left:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        return False
                    f.write(chunk)
                    left -= len(chunk)
        except OSError:  # reset, timeout (TimeoutError is an OSError)
            return False
        return True

    def _json(self, code, obj):
        self._send(code, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _send(self, code, body: bytes, content_type, headers=None):
        try:
            self.send_response(code)
            for k, v in {"Content-Type": content_type, "Content-Length": str(len(body)),
                         "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                         "Referrer-Policy": "no-referrer", **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the phone went away; nothing to tell it
            self.close_connection = True

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # the request line holds the token: the station prints its own lines
        pass


def make_server(station: CaptureStation, host="0.0.0.0", port=8000) -> ThreadingHTTPServer:
    handler = type("Handler", (CaptureHandler,), {"station": station})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise KitError(f"cannot listen on {host}:{port} ({e.strerror}). Fix: pick another --port, "
                       "or stop the program using it.") from None
    server.daemon_threads = True
    return server


def lan_ip() -> str:
    """The laptop's address on the local network: the interface a packet to the internet or to a
    private network would leave by (a hotspot has no internet route), else what the hostname says."""
    for target in ("1.1.1.1", "10.254.254.254", "192.168.254.254", "172.16.254.254"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))  # UDP connect sends nothing; it only picks the interface
                ip = s.getsockname()[0]
        except OSError:
            continue
        if not ip.startswith("127.") and ip != "0.0.0.0":
            return ip
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        ips = set()
    return next((ip for ip in sorted(ips) if not ip.startswith("127.")), "127.0.0.1")


def address(station: CaptureStation, host, port) -> str:
    shown = lan_ip() if host in ("0.0.0.0", "", "::") else host
    return f"http://{shown}:{port}/?t={station.token}"


def announce(url, qr_png: Path, out=sys.stdout):
    """Print the address and its QR code in the terminal; save the QR as a PNG to show on a projector."""
    import segno

    qr = segno.make(url, error="m")
    print(f"\nOpen on the phones (same Wi-Fi as this laptop), or scan:\n  {url}\n", file=out)
    qr.terminal(out=out, compact=True)
    with atomic_path(qr_png) as tmp:
        qr.save(str(tmp), kind="png", scale=8)
    print(f"QR code also in {display(qr_png)}.", file=out)
    if urlsplit(url).hostname.startswith("127."):
        print("warning: this laptop has no network address; phones cannot reach it. Fix: join the phones' "
              "Wi-Fi, or turn on the laptop's hotspot and join the phones to it.", file=out)
    print("Ctrl+C stops the station.\n", file=out, flush=True)


def serve_capture(ws: Workspace, host="0.0.0.0", port=8000, max_mb=MAX_MB, max_files=MAX_FILES, max_side=1024,
                  echo=print):
    """Serve the capture page until Ctrl+C; returns what was received (the status dict)."""
    if max_mb <= 0 or max_files <= 0:
        raise KitError("--max-mb and --max-files must be positive. Fix: e.g. --max-mb 40 --max-files 2000.")
    if max_side is not None and max_side < 64:
        raise KitError(f"--max-side {max_side} is too small for detection. Fix: use 512 or more (default 1024).")
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    station = CaptureStation(ws, max_bytes=int(max_mb * 2**20), max_files=max_files, max_side=max_side, echo=echo)
    server = make_server(station, host, port)
    try:
        announce(address(station, host, server.server_address[1]), ws.state_dir / "capture-qr.png")
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        station.close()
    return station.status()
