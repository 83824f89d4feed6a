"""hack capture: phones upload through a tokened page into the workspace with the same import as
`hack import`. Real server threads on 127.0.0.1, real sockets, a real headless Chromium."""
import http.client
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import heic_can_encode, mean_abs_diff, headless_chromium
from hackathon.cli import cli
from labeling.capture import CaptureHandler, CaptureStation, announce, display_name, make_server
from hackathon.core.errors import KitError
from labeling.importing import import_photos

GPS_MARKERS = (b"Exif\0\0", b"GPS", b"Pixel 8", b"Google")


@contextmanager
def serving(ws, handler_overrides=None, **limits):
    """A capture station on a free 127.0.0.1 port in a thread; stopped and cleaned up on exit."""
    lines = []
    limits = {"max_bytes": 2 << 20, "max_files": 50, "max_side": 256, **limits}
    station = CaptureStation(ws, echo=lines.append, **limits)
    server = make_server(station, "127.0.0.1", 0)
    if handler_overrides:
        server.RequestHandlerClass = type("Patched", (server.RequestHandlerClass,), handler_overrides)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    station.port, station.lines = server.server_address[1], lines
    try:
        yield station
    finally:
        server.shutdown()
        server.server_close()
        station.close()
        thread.join(5)


def request(st, method, path, body=None, token=None, headers=None, **query):
    query = {"t": st.token if token is None else token, **query}
    conn = http.client.HTTPConnection("127.0.0.1", st.port, timeout=20)
    try:
        conn.request(method, f"{path}?{urlencode(query)}", body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), r.headers
    finally:
        conn.close()


def upload(st, data, name="phone.jpg", member="Ana", scene="tank-a", key=None, token=None):
    query = {"member": member, "scene": scene, "name": name, **({"key": key} if key else {})}
    status, body, _ = request(st, "POST", "/upload", body=data, token=token, **query)
    return status, json.loads(body) if status != 403 else body


def raw(st, data: bytes):
    """Send bytes on a bare socket; return all the server answers before it closes (5 s timeout)."""
    with socket.create_connection(("127.0.0.1", st.port), timeout=5) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def jpeg(make_photo, path, **kw):
    make_photo(path, **kw)
    return path.read_bytes()


def gps_exif():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Google", "Pixel 8"  # Make, Model
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif


def stored(ws):
    return sorted(p.relative_to(ws.photos_dir).as_posix() for p in ws.photos_dir.glob("*/*.jpg"))


def index(ws):
    return json.loads(ws.index_file.read_text("utf-8"))["photos"]


def assert_upright_and_clean(path: Path, upright, size):
    data = path.read_bytes()
    with Image.open(path) as out:
        assert out.size == size and dict(out.getexif()) == {}
        assert mean_abs_diff(out.convert("RGB"), upright.resize(size, Image.LANCZOS)) < 8
        top_left = np.asarray(out.convert("RGB"))[:10, :10].mean(axis=(0, 1))
        assert top_left[0] > 180 and top_left[1] < 80, top_left  # the red corner is top-left: upright
    for marker in GPS_MARKERS:
        assert marker not in data, marker


def test_upload_lands_upright_without_exif_or_gps(ws, tmp_path, make_photo):
    upright = make_photo(tmp_path / "IMG_0042.jpg", size=(320, 240), orientation=6, exif=gps_exif())
    with Image.open(tmp_path / "IMG_0042.jpg") as src:
        assert src.size == (240, 320) and src.getexif().get_ifd(0x8825)  # stored sideways, with GPS
    with serving(ws) as st:
        status, answer = upload(st, (tmp_path / "IMG_0042.jpg").read_bytes(), name="IMG_0042.jpg")
        assert not list(st.tmp_dir.iterdir())  # the upload's temp file is gone
    assert (status, answer["status"], answer["photo"]) == (200, "accepted", "tank-a/Ana_IMG_0042.jpg")
    assert_upright_and_clean(ws.photos_dir / "tank-a/Ana_IMG_0042.jpg", upright, (256, 192))
    assert index(ws)["tank-a/Ana_IMG_0042.jpg"]["source"] == "IMG_0042.jpg"


def test_an_iphone_heic_upload_lands_upright_as_jpeg(ws, tmp_path, make_photo):
    if not heic_can_encode():
        pytest.skip("pillow-heif cannot encode HEIC here")
    upright = make_photo(tmp_path / "IMG_0001.HEIC", size=(320, 240), orientation=6, exif=gps_exif())
    with serving(ws) as st:
        status, answer = upload(st, (tmp_path / "IMG_0001.HEIC").read_bytes(), name="IMG_0001.HEIC")
    assert (status, answer["photo"]) == (200, "tank-a/Ana_IMG_0001.jpg")
    assert_upright_and_clean(ws.photos_dir / answer["photo"], upright, (256, 192))


def test_eight_concurrent_uploads_incl_the_same_file_twice_land_exactly_once(ws, tmp_path, make_photo):
    files = [jpeg(make_photo, tmp_path / f"p{i}.jpg", size=(480, 360), seed=i) for i in range(7)]
    files.append(files[2])  # the same photo sent again from another phone (another key)
    members = ["Ana", "Bo", "Chi", "Dee"]
    start, answers = threading.Barrier(len(files)), [None] * len(files)

    def send(i):
        start.wait(timeout=10)
        answers[i] = upload(st, files[i], name=f"p{i}.jpg", member=members[i % 4], key=f"key-{i:04d}")

    with serving(ws) as st:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(files))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(a is not None for a in answers), answers
        # a retry of one that already arrived (its answer was lost on the way back): same answer, nothing new
        replay = upload(st, files[5], name="p5.jpg", member="Bo", key="key-0005")
        status = json.loads(request(st, "GET", "/status")[1])
        assert not list(st.tmp_dir.iterdir())
    kinds = sorted(a[1]["status"] for a in answers)
    assert kinds == ["accepted"] * 7 + ["duplicate"], answers
    assert replay == answers[5]
    assert len(stored(ws)) == 7 and len(index(ws)) == 7
    assert len({e["source_sha256"] for e in index(ws).values()}) == 7
    sent = {(r["member"], r["scene"]): r["photos"] for r in status["sent"]}
    assert sum(sent.values()) == 7 and status["photos_per_scene"] == {"tank-a": 7}
    assert sent[("Ana", "tank-a")] == 2 and sent[("Bo", "tank-a")] == 2  # p0 p4, p1 p5; p2 came twice
    assert status["uploads_left"] == 50 - 8  # the replay was not counted


def test_every_request_needs_the_token(ws, tmp_path, make_photo):
    data = jpeg(make_photo, tmp_path / "a.jpg")
    with serving(ws) as st:
        wrong = "x" * len(st.token)
        for token in ("", wrong, st.token[:-1], st.token + "x"):
            for method, path in (("GET", "/"), ("GET", "/status"), ("POST", "/upload"), ("GET", "/nope")):
                status, body, headers = request(st, method, path, body=data if method == "POST" else None,
                                                token=token, member="Ana", scene="tank-a")
                assert (status, body) == (403, b"forbidden\n"), (token, path)
        no_query = http.client.HTTPConnection("127.0.0.1", st.port, timeout=5)
        no_query.request("GET", "/")
        assert no_query.getresponse().status == 403
        no_query.close()
        status, page, headers = request(st, "GET", "/")
    assert stored(ws) == []
    assert status == 200 and b"Send photos" in page and b'type="file"' in page
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]


def test_a_text_file_is_refused_with_a_message(ws, tmp_path):
    with serving(ws) as st:
        status, answer = upload(st, b"shopping list: fish food\n", name="notes.txt")
        assert not list(st.tmp_dir.iterdir())
    assert status == 415 and answer["status"] == "refused"
    assert "notes.txt: not an image" in answer["message"] and "Fix:" in answer["message"]
    assert stored(ws) == [] and not ws.index_file.exists()


def test_oversized_content_length_is_refused_before_the_body_is_read(ws):
    with serving(ws, max_bytes=1 << 20) as st:
        head = (f"POST /upload?{urlencode({'t': st.token, 'member': 'Ana', 'scene': 'tank-a'})} HTTP/1.1\r\n"
                f"Host: x\r\nContent-Length: {(1 << 20) + 1}\r\n\r\n").encode()
        t0 = time.monotonic()
        answer = raw(st, head)  # no body sent: a server reading it would hang until our 5 s timeout
        assert time.monotonic() - t0 < 4
        assert answer.startswith(b"HTTP/1.0 413") and b"more than the 1 MB" in answer
        no_length = (f"POST /upload?{urlencode({'t': st.token, 'member': 'Ana', 'scene': 'tank-a'})} HTTP/1.1\r\n"
                     "Host: x\r\n\r\n").encode()
        assert raw(st, no_length).startswith(b"HTTP/1.0 411")
        for header in ("Transfer-Encoding: chunked", "Content-Length: -5", "Content-Length: ²", "Content-Length: 1e9"):
            bad = no_length.replace(b"\r\n\r\n", f"\r\n{header}\r\n\r\n".encode())
            assert raw(st, bad).startswith(b"HTTP/1.0 411"), header
        left = json.loads(request(st, "GET", "/status")[1])["uploads_left"]
    assert left == 50 and stored(ws) == []


def test_a_dropped_connection_keeps_what_arrived_and_stores_nothing_partial(ws, tmp_path, make_photo):
    first = jpeg(make_photo, tmp_path / "first.jpg", size=(320, 240), seed=1)
    second = jpeg(make_photo, tmp_path / "second.jpg", size=(320, 240), seed=2)
    with serving(ws) as st:
        assert upload(st, first, name="first.jpg", key="key-first")[1]["status"] == "accepted"
        query = urlencode({"t": st.token, "member": "Ana", "scene": "tank-a", "name": "second.jpg", "key": "key-second"})
        head = f"POST /upload?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(second)}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", st.port), timeout=5) as s:
            s.sendall(head + second[: len(second) // 2])  # the phone walks out of Wi-Fi range here
        for _ in range(100):  # bounded: 5 s
            if st.dropped:
                break
            time.sleep(0.05)
        assert st.dropped == 1 and not list(st.tmp_dir.iterdir())
        assert stored(ws) == ["tank-a/Ana_first.jpg"] and list(index(ws)) == ["tank-a/Ana_first.jpg"]
        assert not [p for p in ws.photos_dir.rglob("*") if p.name.startswith(".")]  # no partial files
        # the page retries with the same key: it is stored now, once
        assert upload(st, second, name="second.jpg", key="key-second")[1]["status"] == "accepted"
        assert upload(st, second, name="second.jpg", key="key-second")[1]["status"] == "accepted"
        left = json.loads(request(st, "GET", "/status")[1])["uploads_left"]
    assert stored(ws) == ["tank-a/Ana_first.jpg", "tank-a/Ana_second.jpg"]
    assert left == 50 - 2
    assert any("connection dropped" in line for line in st.lines)


@pytest.mark.parametrize("member,scene", [("", "tank-a"), ("<b>x</b>", "tank-a"), ("Ana", "../evil"),
                                          ("Ana", "tank a"), ("Ana", "tank\n"), ("Ana", ""), ("A" * 40, "tank-a")])
def test_bad_names_and_scenes_are_refused(ws, tmp_path, make_photo, member, scene):
    data = jpeg(make_photo, tmp_path / "a.jpg")
    with serving(ws) as st:
        status, answer = upload(st, data, member=member, scene=scene)
    assert status == 400 and answer["status"] == "refused" and ("name" in answer["message"] or "scene" in answer["message"])
    assert not ws.photos_dir.exists() or list(ws.photos_dir.iterdir()) == []


def test_any_script_in_names_is_fine_and_file_names_are_never_paths(ws, tmp_path, make_photo):
    data = jpeg(make_photo, tmp_path / "a.jpg")
    with serving(ws) as st:
        status, answer = upload(st, data, member="Zoë Ng", scene="水槽-1", name="../../x/.bashrc\u202e.jpg")
    assert status == 200 and answer["status"] == "accepted"
    assert stored(ws) == [answer["photo"]] and answer["photo"].startswith("水槽-1/Zoë_Ng_")
    assert not (tmp_path / "x").exists() and not (ws.root.parent / "x").exists()
    assert display_name("C:\\DCIM\\IMG 1.HEIC") == "IMG 1.HEIC" and display_name("") == "photo"


def test_the_upload_count_is_capped(ws, tmp_path, make_photo):
    files = [jpeg(make_photo, tmp_path / f"p{i}.jpg", size=(320, 240), seed=i) for i in range(3)]
    with serving(ws, max_files=2) as st:
        answers = [upload(st, data, name=f"p{i}.jpg") for i, data in enumerate(files)]
    assert [a[0] for a in answers] == [200, 200, 429] and "--max-files" in answers[2][1]["message"]
    assert len(stored(ws)) == 2


def test_a_stopping_station_refuses_new_uploads_and_leaves_no_temp_files(ws, tmp_path, make_photo):
    data = jpeg(make_photo, tmp_path / "a.jpg")
    with serving(ws) as st:
        st.close()  # what Ctrl+C does after the listening socket closes
        status, answer = upload(st, data, key="key-late")
        assert not st.tmp_dir.exists()
    assert status == 503 and "stopping" in answer["message"] and stored(ws) == []


def test_existing_scenes_and_counts_survive_a_restart(ws, tmp_path, make_photo):
    make_photo(tmp_path / "old.jpg", seed=5)
    import_photos(ws, [tmp_path / "old.jpg"], scene="reef", progress=False)
    data = jpeg(make_photo, tmp_path / "new.jpg", seed=6)
    with serving(ws) as st:
        upload(st, data, member="Bo", scene="reef")
    with serving(ws) as st:
        status = json.loads(request(st, "GET", "/status")[1])
        (ws.photos_dir / "reef/Bo_phone.jpg").unlink()  # a blurred one, deleted by the team
        after = json.loads(request(st, "GET", "/status")[1])
    assert status["scenes"] == ["reef"] and status["photos_per_scene"] == {"reef": 2}
    assert status["sent"] == [{"member": "Bo", "scene": "reef", "photos": 1}]
    assert after["sent"] == [] and after["photos_per_scene"] == {"reef": 1}


def test_announce_prints_the_address_and_a_qr_code_that_decodes_to_it(tmp_path):
    import cv2

    url = "http://192.168.1.23:8000/?t=AbCdEf0123456789xyzXYZ"
    out = io.StringIO()
    announce(url, tmp_path / "qr.png", out=out)
    text = out.getvalue()
    assert url in text and "▀" in text and "Ctrl+C" in text
    decoded, _, _ = cv2.QRCodeDetector().detectAndDecode(cv2.imread(str(tmp_path / "qr.png")))
    assert decoded == url


def test_cli_refuses_bad_limits_and_a_taken_port(ws):
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "capture", "--max-side", "10"])
    assert result.exit_code == 1 and "--max-side 10 is too small" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(KitError, match="pick another --port"):
            make_server(CaptureStation(ws), "127.0.0.1", busy.getsockname()[1])


# ---- the real page in a real browser ----

@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path, "--window-size=412,915")  # a phone's screen
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_photo_chosen_on_the_page_lands_upright_and_without_gps(ws, tmp_path, make_photo, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    make_photo(tmp_path / "seed.jpg", seed=9)
    import_photos(ws, [tmp_path / "seed.jpg"], scene="tank-a", progress=False)  # an existing scene to offer
    upright = make_photo(tmp_path / "phone" / "PXL_0001.jpg", size=(400, 300), orientation=6, exif=gps_exif(), seed=3)
    (tmp_path / "phone" / "notes.txt").write_text("not a photo")
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    with serving(ws) as st:
        browser.get(f"http://127.0.0.1:{st.port}/?t={st.token}")
        wait.until(lambda d: "tank-a" in [o.get_attribute("value") for o in Select(d.find_element(By.ID, "scene")).options])
        browser.find_element(By.ID, "member").send_keys("Ana")
        Select(browser.find_element(By.ID, "scene")).select_by_value("tank-a")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "phone" / "PXL_0001.jpg"))
        row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#mine li.accepted"))
        assert "stored as tank-a/Ana_PXL_0001.jpg" in row.text
        wait.until(lambda d: "Ana\ntank-a\n1" in d.find_element(By.ID, "sent").get_attribute("innerText").replace("\t", "\n"))
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "phone" / "notes.txt"))
        refused = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#mine li.refused"))
        assert "not an image the kit can read" in refused.text
    assert stored(ws) == ["tank-a/Ana_PXL_0001.jpg", "tank-a/seed.jpg"]
    assert_upright_and_clean(ws.photos_dir / "tank-a/Ana_PXL_0001.jpg", upright, (256, 192))


def test_the_page_retries_a_lost_answer_and_the_photo_is_stored_once(ws, tmp_path, make_photo, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    make_photo(tmp_path / "IMG_7.jpg", size=(320, 240), seed=7)
    lost = []

    def answer_lost_once(self, code, obj):  # the photo is imported, then Wi-Fi drops before the answer
        if urlsplit(self.path).path == "/upload" and not lost:
            lost.append(obj)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        CaptureHandler._json(self, code, obj)

    with serving(ws, handler_overrides={"_json": answer_lost_once}) as st:
        browser.get(f"http://127.0.0.1:{st.port}/?t={st.token}")
        browser.find_element(By.ID, "member").send_keys("Bo")
        browser.find_element(By.ID, "new-scene").send_keys("reef")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "IMG_7.jpg"))
        row = WebDriverWait(browser, 30, poll_frequency=0.2).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#mine li.accepted"))
        left = json.loads(request(st, "GET", "/status")[1])["uploads_left"]
    assert [o["status"] for o in lost] == ["accepted"]
    assert "stored as reef/Bo_IMG_7.jpg" in row.text  # the replayed answer, not "duplicate"
    assert stored(ws) == ["reef/Bo_IMG_7.jpg"] and left == 50 - 1
