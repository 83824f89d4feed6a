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

from hackathon.judge.board import public
from hackathon.judge.history import check_history, connect, latest_board
from hackathon.core.errors import KitError

CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# The projector page and its script, files beside this module (like labeling/capture_page.html).
PAGE = (Path(__file__).parent / "leaderboard_page.html").read_text("utf-8")
APP_JS = (Path(__file__).parent / "leaderboard_page.js").read_text("utf-8")


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
    except (sqlite3.DatabaseError, KitError):  # replaced by another file since the server started
        return {"run": None, "rows": [], "error": "The scoring history can no longer be read; judges: restart "
                                                  "`hack leaderboard serve` with the leaderboard.db of `hack score`."}


def make_server(db_path, host="127.0.0.1", port=8000, refresh_s=3.0):
    """A ready ThreadingHTTPServer (call serve_forever); port 0 picks a free port. A ``db_path``
    that is not a leaderboard history is refused here (KitError), not on every poll."""
    check_history(db_path)
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
