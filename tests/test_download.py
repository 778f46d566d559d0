"""Downloading and unpacking (nemopose.fetch.download, nemopose.fetch.archive, nemopose.fetch.sources)
against a loopback HTTP server: dropped, stalled and lying transfers, servers without Range,
Google Drive's confirmation pages, unsafe archives, and the whole dataset fetch."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import logging
import os
import socket
import stat
import tarfile
import threading
import time
import urllib.parse
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from nemopose.data import layout
from nemopose.fetch import archive, download as dl, drive, sources, weights
from nemopose.fetch.download import DownloadError, UnsafeArchiveError

LEVELS = ("FGL1_BGL1", "FGL2_BGL2", "FGL3_BGL3")


# ----------------------------------------------------------------------------- loopback server


class ServerState:
    """What the test server does (set per test) and what it saw."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self.cut_first = False     # first GET of each path: send half the body, drop the connection
        self.stall_first = 0.0     # first GET of each path: send half, then go silent this long
        self.ignore_range = False  # answer 200 with the whole file to Range requests
        self.short_by = 0          # announce the full length but always send this many bytes less
        self.routes = {}           # path -> handler(request_handler, query dict)
        self.requests = []         # (path with query, headers dict)
        self.seen = set()

    def requests_for(self, path: str) -> list[dict]:
        return [h for p, h in self.requests if urllib.parse.urlsplit(p).path == path]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state
        parts = urllib.parse.urlsplit(self.path)
        state.requests.append((self.path, dict(self.headers)))
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
        if parts.path in state.routes:
            return state.routes[parts.path](self, query)
        file = state.root / urllib.parse.unquote(parts.path.lstrip("/"))
        if not file.is_file():
            return self.send_bytes(b"not found", status=404, content_type="text/plain")
        self.send_file(file.read_bytes(), key=parts.path)

    def send_bytes(self, body: bytes, *, status: int = 200, content_type: str = "text/html",
                   headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, data: bytes, key: str) -> None:
        """Serve ``data`` with Range support and the failure modes of ServerState."""
        state: ServerState = self.server.state
        rng = None if state.ignore_range else self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:len(data) - state.short_by]
        first = key not in state.seen
        state.seen.add(key)
        if first and (state.cut_first or state.stall_first):
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            time.sleep(state.stall_first)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on a dropped or stalled transfer are the point of the tests


@contextlib.contextmanager
def loopback_server(root: Path):
    """A loopback HTTP server (127.0.0.1 only, Range support) over ``root``; yields its
    :class:`ServerState` (``.url``, failure switches)."""
    root.mkdir(parents=True, exist_ok=True)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.state = ServerState(root)
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(tmp_path):
    with loopback_server(tmp_path / "served") as state:
        yield state


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.01)


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    """``n`` reproducible random bytes."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).numpy().tobytes()


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (links not followed), for before/after comparisons."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, n), root) for n in dirnames + filenames]
    return sorted(out)


def make_zip(path: Path, entries: dict[str, bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


# ----------------------------------------------------------------------------- download


def test_download_survives_a_dropped_connection(server, tmp_path):
    data = payload()
    (server.root / "big.bin").write_bytes(data)
    server.cut_first = True
    dest = dl.download(f"{server.url}/big.bin", tmp_path / "out" / "big.bin", progress=False)
    assert dest.read_bytes() == data
    assert not dl.part_path(dest).exists()
    reqs = server.requests_for("/big.bin")
    assert len(reqs) == 2 and "Range" not in reqs[0]
    resumed_at = int(reqs[1]["Range"].split("=")[1].rstrip("-"))
    assert 0 < resumed_at <= len(data) // 2  # continued, not restarted


def test_download_resumes_after_a_stalled_connection(server, tmp_path):
    data = payload(100_000, seed=1)
    (server.root / "slow.bin").write_bytes(data)
    server.stall_first = 1.5
    dest = dl.download(f"{server.url}/slow.bin", tmp_path / "slow.bin", progress=False, timeout=0.3)
    assert dest.read_bytes() == data
    assert "Range" in server.requests_for("/slow.bin")[1]


def test_existing_part_is_continued_with_a_range_request(server, tmp_path):
    data = payload(seed=2)
    (server.root / "a.bin").write_bytes(data)
    dest = tmp_path / "a.bin"
    dl.part_path(dest).write_bytes(data[:1000])
    dl.download(f"{server.url}/a.bin", dest, progress=False)
    assert server.requests_for("/a.bin")[0]["Range"] == "bytes=1000-"
    assert dest.read_bytes() == data and not dl.part_path(dest).exists()


def test_complete_part_is_finished_without_downloading_again(server, tmp_path):
    data = payload(5000, seed=3)
    (server.root / "c.bin").write_bytes(data)
    dest = tmp_path / "c.bin"
    dl.part_path(dest).write_bytes(data)
    dl.download(f"{server.url}/c.bin", dest, progress=False)  # the server answers 416
    assert dest.read_bytes() == data and not dl.part_path(dest).exists()
    # one request, asking for the bytes after the part: nothing was fetched again
    reqs = server.requests_for("/c.bin")
    assert len(reqs) == 1 and reqs[0]["Range"] == "bytes=5000-", reqs


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, caplog):
    data = payload(seed=4)
    (server.root / "b.bin").write_bytes(data)
    server.ignore_range = True
    server.cut_first = True
    dest = tmp_path / "b.bin"
    dl.part_path(dest).write_bytes(b"x" * 777)  # wrong bytes: must not survive a 200 answer
    with caplog.at_level(logging.INFO, logger="nemopose.fetch.download"):
        dl.download(f"{server.url}/b.bin", dest, progress=False)
    assert dest.read_bytes() == data
    assert "starting again from byte 0" in caplog.text


def test_lying_content_length_fails_after_retries_and_keeps_the_part(server, tmp_path):
    data = payload(50_000, seed=5)
    (server.root / "liar.bin").write_bytes(data)
    server.short_by = 10
    dest = tmp_path / "liar.bin"
    with pytest.raises(DownloadError) as info:
        dl.download(f"{server.url}/liar.bin", dest, retries=2, progress=False)
    msg = str(info.value)
    assert f"{server.url}/liar.bin" in msg and "2 retries" in msg and str(dl.part_path(dest)) in msg
    assert not dest.exists()
    assert dl.part_path(dest).read_bytes() == data[:-10]
    # the first attempt makes progress (resets the count), then 1 + retries attempts make none
    assert len(server.requests_for("/liar.bin")) == 2 + 2


def test_http_errors_and_unreachable_hosts_fail_at_once(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.zip: HTTP 404"):
        dl.download(f"{server.url}/missing.zip", tmp_path / "m.zip", progress=False)
    assert len(server.requests_for("/missing.zip")) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach"):
        dl.download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False)
    assert time.monotonic() - start < 5


def test_html_page_instead_of_a_file_is_refused(server, tmp_path):
    server.routes["/login"] = lambda h, q: h.send_bytes(b"<html><title>Sign in</title></html>")
    with pytest.raises(DownloadError, match="HTML page"):
        dl.download(f"{server.url}/login", tmp_path / "x.zip", progress=False)
    assert not dl.part_path(tmp_path / "x.zip").exists()


def test_local_paths_and_file_urls_are_copied(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(payload(1000, seed=6))
    assert dl.download(str(src), tmp_path / "o1" / "a", progress=False).read_bytes() == src.read_bytes()
    assert dl.download(src.as_uri(), tmp_path / "o2" / "a", progress=False).read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="no such file"):
        dl.download(str(tmp_path / "absent.bin"), tmp_path / "o3" / "a", progress=False)


# ----------------------------------------------------------------------------- Google Drive

OLD_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p><span class="uc-name-size"><a href="/open?id=FILE_ID">big.zip</a> (1.2G)</span> is too large
for Google to scan for viruses. Would you still like to download this file?</p>
<a id="uc-download-link" class="goog-inline-block jfk-button"
   href="/uc?export=download&amp;confirm=Xy_9-a&amp;id=FILE_ID">Download anyway</a>
</div></body></html>"""

NEW_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body><div class="uc-main">
<div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p></div>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="FILE_ID"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="5a1e-77b0">
</form></div></body></html>"""

QUOTA_PAGE = """<html><head><title>Google Drive - Quota exceeded</title></head><body>
<p>Too many users have viewed or downloaded this file recently. Please try accessing the file
again later.</p><a href="/open?id=FILE_ID">Open</a></body></html>"""


def test_drive_confirm_url_old_page_link():
    page_url = "https://drive.google.com/uc?export=download&id=FILE_ID"
    assert (drive.drive_confirm_url(OLD_PAGE, page_url)
            == "https://drive.google.com/uc?export=download&confirm=Xy_9-a&id=FILE_ID")


def test_drive_confirm_url_new_page_form():
    page = NEW_PAGE.format(action="https://drive.usercontent.google.com/download")
    url = drive.drive_confirm_url(page, "https://drive.google.com/uc?export=download&id=FILE_ID")
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "drive.usercontent.google.com", "/download")
    assert urllib.parse.parse_qs(parts.query) == {"id": ["FILE_ID"], "export": ["download"],
                                                  "confirm": ["t"], "uuid": ["5a1e-77b0"]}


def test_drive_confirm_url_cookie_and_nothing():
    page_url = "https://drive.google.com/uc?export=download&id=FILE_ID"
    url = drive.drive_confirm_url("<html><title>warning</title></html>", page_url,
                               {"NID": "1", "download_warning_13058_FILE_ID": "tok3n"})
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query) == {
        "export": ["download"], "id": ["FILE_ID"], "confirm": ["tok3n"]}
    assert drive.drive_confirm_url(QUOTA_PAGE, page_url) is None


def _drive_routes(server, data: bytes, style: str) -> None:
    """/uc answers like Drive (``style`` of confirmation page), the file comes after confirming."""
    def uc(h, q):
        if q.get("id") != "FILE_ID":
            return h.send_bytes(b"", status=404)
        if style == "form":
            return h.send_bytes(NEW_PAGE.format(action=f"{server.url}/download").encode())
        if "confirm" not in q:
            if style == "cookie":  # token only in the cookie; the page has no link
                return h.send_bytes(b"<html><title>warning</title></html>",
                                    headers={"Set-Cookie": "download_warning_1_FILE_ID=C00kie; Path=/"})
            return h.send_bytes(OLD_PAGE.encode())
        expected = "C00kie" if style == "cookie" else "Xy_9-a"
        if q["confirm"] != expected or (style == "cookie" and "C00kie" not in h.headers.get("Cookie", "")):
            return h.send_bytes(b"bad confirmation", status=403, content_type="text/plain")
        h.send_file(data, key="file")

    def usercontent(h, q):
        if q != {"id": "FILE_ID", "export": "download", "confirm": "t", "uuid": "5a1e-77b0"}:
            return h.send_bytes(b"bad form", status=403, content_type="text/plain")
        h.send_file(data, key="file")

    server.routes.update({"/uc": uc, "/download": usercontent})


@pytest.mark.parametrize("style", ["form", "link", "cookie"])
def test_drive_download_follows_confirmation_and_resumes(server, tmp_path, monkeypatch, style):
    monkeypatch.setattr(drive, "DRIVE_BASE_URL", f"{server.url}/uc")
    data = payload(seed=7)
    _drive_routes(server, data, style)
    server.cut_first = True  # the real file's first transfer is dropped half-way
    dest = dl.download("drive:FILE_ID", tmp_path / "big.zip", progress=False)
    assert dest.read_bytes() == data
    file_requests = [h for p, h in server.requests if "confirm" in p]
    assert len(file_requests) == 2 and "Range" in file_requests[1]


def test_drive_resumes_a_part_through_the_confirmation(server, tmp_path, monkeypatch):
    monkeypatch.setattr(drive, "DRIVE_BASE_URL", f"{server.url}/uc")
    data = payload(seed=8)
    _drive_routes(server, data, "form")
    dest = tmp_path / "big.zip"
    dl.part_path(dest).write_bytes(data[:4096])  # the HTML page (200) must not truncate this
    dl.download("drive:FILE_ID", dest, progress=False)
    assert dest.read_bytes() == data
    assert server.requests_for("/download")[0]["Range"] == "bytes=4096-"


def test_drive_page_without_confirmation_is_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.setattr(drive, "DRIVE_BASE_URL", f"{server.url}/uc")
    server.routes["/uc"] = lambda h, q: h.send_bytes(QUOTA_PAGE.encode())
    with pytest.raises(DownloadError) as info:
        dl.download("drive:FILE_ID", tmp_path / "big.zip", progress=False)
    msg = str(info.value)
    assert "Quota exceeded" in msg and "https://drive.google.com/file/d/FILE_ID/view" in msg
    assert str(tmp_path / "big.zip") in msg and not dl.part_path(tmp_path / "big.zip").exists()


# ----------------------------------------------------------------------------- safe extraction


def _zip_link(path: Path, link: str, target: str, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(link)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tuple[str, bytes | None, dict]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(info, k, v)
            info.size = len(data or b"")
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


UNSAFE = {
    "zip-dotdot": (lambda p: make_zip(p, {"ok/a.txt": "ok", "../../escaped.txt": "x"}), "../../escaped.txt"),
    "zip-absolute": (lambda p: make_zip(p, {"ok/a.txt": "ok", "/tmp/abs_escaped.txt": "x"}), "/tmp/abs_escaped.txt"),
    "zip-drive-letter": (lambda p: make_zip(p, {"C:/escaped.txt": "x"}), "C:/escaped.txt"),
    "zip-symlink-out": (lambda p: _zip_link(p, "ok/link", "../../outside", {"ok/a.txt": "ok"}), "ok/link"),
    "zip-write-through-link": (lambda p: _zip_link(p, "a", ".", {"a/b.txt": "x"}), "a/b.txt"),
    "tar-dotdot": (lambda p: _tar(p, [("ok/a.txt", b"ok", {}), ("ok/../../escaped.txt", b"x", {})]),
                   "ok/../../escaped.txt"),
    "tar-symlink-out": (lambda p: _tar(p, [("ok/l", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})]),
                        "ok/l"),
    "tar-hardlink-out": (lambda p: _tar(p, [("h", None, {"type": tarfile.LNKTYPE, "linkname": "../x"})]), "h"),
    "tar-device": (lambda p: _tar(p, [("dev", None, {"type": tarfile.CHRTYPE})]), "dev"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_refused_and_write_nothing(tmp_path, case):
    build, member = UNSAFE[case]
    arc = build(tmp_path / ("evil.zip" if case.startswith("zip") else "evil.tar.gz"))
    target = tmp_path / "deep" / "inner" / "target"
    target.parent.mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError) as info:
        archive.safe_extract(arc, target)
    assert repr(member) in str(info.value) and "unsafe" in str(info.value)
    assert tree(tmp_path) == before
    assert not Path("/tmp/abs_escaped.txt").exists()


def test_links_inside_the_archive_are_kept(tmp_path):
    arc = _zip_link(tmp_path / "l.zip", "docs/latest", "v1", {"docs/v1/a.txt": "hello"})
    out = archive.safe_extract(arc, tmp_path / "out")
    assert (out / "docs/latest").is_symlink() and (out / "docs/latest/a.txt").read_text() == "hello"


def test_tar_archives_extract_with_strip_and_hardlinks(tmp_path):
    arc = _tar(tmp_path / "t.tar.gz", [("top", None, {"type": tarfile.DIRTYPE}), ("top/a.txt", b"A", {}),
                                       ("top/b.txt", None, {"type": tarfile.LNKTYPE, "linkname": "top/a.txt"})])
    assert archive.single_top_folder(archive.archive_members(arc)) == "top"
    out = archive.safe_extract(arc, tmp_path / "out", strip_top="top")
    assert tree(out) == ["a.txt", "b.txt"] and (out / "b.txt").read_bytes() == b"A"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.lists(st.sampled_from(["a", "b", "..", ".", ""]), min_size=1, max_size=4)
                      .map("/".join), min_size=1, max_size=4, unique=True))
def test_extraction_never_writes_outside_the_target(tmp_path_factory, names):
    """Property: for any member names, extraction either refuses or stays inside the target."""
    base = tmp_path_factory.mktemp("prop")
    arc = base / "x.zip"
    with zipfile.ZipFile(arc, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the search space
        for i, name in enumerate(names):
            zf.writestr(zipfile.ZipInfo(name or "/"), b"%d" % i)
    target = base / "a" / "b" / "target"
    try:
        archive.safe_extract(arc, target)
    except UnsafeArchiveError:
        assert tree(base) == ["x.zip"]
    except DownloadError:  # e.g. a file and a folder of the same name: refused as a bad archive
        assert not target.exists() and tree(base) == ["x.zip"]
    else:
        outside = [p for p in tree(base) if p not in ("x.zip", "a", os.path.join("a", "b"))
                   and not p.startswith(os.path.join("a", "b", "target"))]
        assert outside == [] and target.is_dir()


def test_failed_extraction_leaves_no_trace(tmp_path):
    arc = tmp_path / "damaged.zip"
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("d/first.txt", b"fine")
        zf.writestr("d/second.txt", b"SECRETDATA" * 10)
    raw = bytearray(arc.read_bytes())
    at = raw.index(b"SECRETDATA")
    raw[at:at + 6] = b"broken"  # the CRC check fails while reading the second member
    arc.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match="damaged"):
        archive.safe_extract(arc, tmp_path / "out")
    assert tree(tmp_path) == ["damaged.zip"]  # no half-extracted target, no .extracting folder


def _level_zip(path: Path, level: str, top: str | None, image: bytes = b"img") -> Path:
    pre = f"{top}/" if top else ""
    return make_zip(path, {f"{pre}images/car{level}/n01.JPEG": image, f"{pre}annotations/car{level}/n01.npz": b"npz",
                           f"{pre}lists/car{level}.txt": "n01\n"})


def test_level_archives_merge_into_one_folder(tmp_path, caplog):
    occ = tmp_path / layout.OCCLUDED_DIR
    z1 = _level_zip(tmp_path / "l1.zip", "FGL1_BGL1", None)
    z2 = _level_zip(tmp_path / "l2.zip", "FGL2_BGL2", "OccludedPASCAL3D_FGL2_BGL2")
    assert archive.single_top_folder(archive.archive_members(z1)) is None
    assert archive.single_top_folder(archive.archive_members(z2)) == "OccludedPASCAL3D_FGL2_BGL2"
    archive.safe_extract(z1, occ, strip_top="OccludedPASCAL3D_FGL1_BGL1")  # not under it: as is
    archive.safe_extract(z2, occ, strip_top="OccludedPASCAL3D_FGL2_BGL2")
    assert tree(occ) == sorted(["annotations", "images", "lists"]
                               + [f"{d}/car{lv}" for d in ("annotations", "images") for lv in LEVELS[:2]]
                               + [f"{d}/car{lv}/n01.{e}" for d, e in (("annotations", "npz"), ("images", "JPEG"))
                                  for lv in LEVELS[:2]]
                               + [f"lists/car{lv}.txt" for lv in LEVELS[:2]])
    # an entry that exists already is kept (and reported) unless overwrite=True
    z1b = _level_zip(tmp_path / "l1b.zip", "FGL1_BGL1", None, image=b"new")
    with caplog.at_level(logging.WARNING, logger="nemopose.fetch.archive"):
        archive.safe_extract(z1b, occ)
    assert (occ / "images/carFGL1_BGL1/n01.JPEG").read_bytes() == b"img" and "kept 3 entries" in caplog.text
    archive.unpack_archive(z1b, occ, overwrite=True)
    assert (occ / "images/carFGL1_BGL1/n01.JPEG").read_bytes() == b"new" and not z1b.exists()
    assert [p for p in tree(tmp_path) if ".extracting-" in p] == []


def test_single_top_folder():
    assert archive.single_top_folder(["PASCAL3D+_release1.1/", "PASCAL3D+_release1.1/Images/a.JPEG"]) \
        == "PASCAL3D+_release1.1"
    assert archive.single_top_folder(["Image_subsets/a.pkl", "__MACOSX/._a.pkl"]) == "Image_subsets"
    assert archive.single_top_folder(["images/a", "lists/b"]) is None
    assert archive.single_top_folder(["top/a", "README"]) is None
    assert archive.single_top_folder([]) is None


# ----------------------------------------------------------------------------- dataset sources


def _dataset_archives(folder: Path) -> dict[str, bytes]:
    """Tiny archives shaped like the real ones, in ``folder``; returns file -> expected bytes."""
    rel = layout.RELEASE_DIR
    make_zip(folder / sources.RELEASE.name, {
        f"{rel}/Images/car_imagenet/n0001.JPEG": b"jpeg-bytes", f"{rel}/Annotations/car_imagenet/n0001.mat": b"mat",
        f"{rel}/Image_sets/car_imagenet_val.txt": "n0001\n", f"{rel}/CAD/car/01.off": "OFF\n"})
    make_zip(folder / sources.IMAGE_SUBSETS.name, {"Image_subsets/README.txt": "subsets\n"})
    for k, level in enumerate(LEVELS):
        _level_zip(folder / sources.OCCLUDED[level].name, level, "OccludedPASCAL3D_" + level if k == 1 else None,
                   image=level.encode())
    return {f"{rel}/Images/car_imagenet/n0001.JPEG": b"jpeg-bytes", f"{rel}/Image_subsets/README.txt": b"subsets\n",
            f"{rel}/CAD/car/01.off": b"OFF\n",
            **{f"{layout.OCCLUDED_DIR}/images/car{lv}/n01.JPEG": lv.encode() for lv in LEVELS},
            **{f"{layout.OCCLUDED_DIR}/lists/car{lv}.txt": b"n01\n" for lv in LEVELS}}


def _leftovers(root: Path) -> list[str]:
    return [p for p in tree(root) if p.endswith((".zip", ".part")) or ".extracting-" in p]


def test_fetch_datasets_from_a_flaky_mirror(server, tmp_path):
    expected = _dataset_archives(server.root)
    server.cut_first = True
    root = tmp_path / "data"
    # an earlier run stopped half-way through the release: its .part is continued
    release_bytes = (server.root / sources.RELEASE.name).read_bytes()
    root.mkdir()
    dl.part_path(root / sources.RELEASE.name).write_bytes(release_bytes[:100])
    assert len(sources.missing_archives(root, LEVELS)) == 5
    done = sources.fetch_datasets(root, ["L1", "L2", "L3"], mirror=server.url + "/", progress=False)
    assert done == [sources.RELEASE.name, sources.IMAGE_SUBSETS.name] + [sources.OCCLUDED[lv].name for lv in LEVELS]
    assert server.requests_for("/" + sources.RELEASE.name)[0]["Range"] == "bytes=100-"
    for rel_path, content in expected.items():
        assert (root / rel_path).read_bytes() == content, rel_path
    assert not (root / layout.OCCLUDED_DIR / "OccludedPASCAL3D_FGL2_BGL2").exists()  # wrapper stripped
    assert _leftovers(root) == [] and sources.missing_archives(root, LEVELS) == []
    n = len(server.requests)
    assert sources.fetch_datasets(root, LEVELS, mirror=server.url, progress=False) == []
    assert len(server.requests) == n  # nothing missing: no network


def test_fetch_datasets_keeps_archives_and_reextracts_pending_ones(tmp_path):
    mirror = tmp_path / "mirror"  # a local folder works as a mirror too
    expected = _dataset_archives(mirror)
    root = tmp_path / "data"
    assert len(sources.fetch_datasets(root, LEVELS, mirror=mirror, keep_archives=True, progress=False)) == 5
    assert sorted(p.name for p in root.glob("*.zip")) == sorted(p.name for p in mirror.glob("*.zip"))
    assert sources.fetch_datasets(root, LEVELS, mirror=mirror, keep_archives=True, progress=False) == []
    # an archive still lying in DATAROOT without keep_archives: unpacked (again) then removed,
    # even offline (download="no" reads the archives already there)
    (root / layout.OCCLUDED_DIR / "lists" / "carFGL3_BGL3.txt").unlink()
    done = sources.fetch_datasets(root, LEVELS, download="no", progress=False)
    assert len(done) == 5 and _leftovers(root) == []
    for rel_path, content in expected.items():
        assert (root / rel_path).read_bytes() == content, rel_path


def test_fetch_datasets_offline_lists_everything_missing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        sources.fetch_datasets(root, LEVELS, download="no", progress=False)
    msg = str(info.value)
    for source in sources.dataset_sources(LEVELS):
        assert f"{source.name} (" in msg and str(root / source.name) in msg
    assert sources.RELEASE.urls[0] in msg
    assert "https://drive.google.com/file/d/1NsoVXW8ngQCqTHHFSW8YYsCim9EjiXS7" in msg
    assert str(root / layout.OCCLUDED_DIR) in msg and not root.exists()


def test_fetch_datasets_refuses_a_traversal_archive(server, tmp_path):
    make_zip(server.root / sources.RELEASE.name, {f"{layout.RELEASE_DIR}/Images/ok.txt": "ok",
                                                  "../../escaped_by_zip.txt": "escaped"})
    root = tmp_path / "e" / "inner" / "data"
    with pytest.raises(UnsafeArchiveError, match=r"\.\./\.\./escaped_by_zip\.txt"):
        sources.fetch_datasets(root, [], mirror=server.url, progress=False)
    assert [p for p in tree(tmp_path) if "escaped" in p] == []
    assert not (root / layout.RELEASE_DIR).exists()
    assert server.requests_for("/" + sources.IMAGE_SUBSETS.name) == []  # stopped at once


# ----------------------------------------------------------------------------- ImageNet weights


def test_imagenet_weights_land_in_the_hub_cache_and_are_hash_checked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.arange(6.0).reshape(2, 3)}, buf)
    data = buf.getvalue()
    good = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (server.root / good).write_bytes(data)
    (server.root / "resnet50-deadbeef.pth").write_bytes(data)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"

    path = weights.imagenet_resnet50(f"{server.url}/{good}", progress=False)
    assert path == cache / good
    assert torch.equal(torch.load(path)["conv1.weight"], torch.arange(6.0).reshape(2, 3))
    n = len(server.requests)
    assert weights.imagenet_resnet50(f"{server.url}/{good}", progress=False) == path and len(server.requests) == n

    with pytest.raises(DownloadError) as info:
        weights.imagenet_resnet50(f"{server.url}/resnet50-deadbeef.pth", progress=False)
    assert "--pretrained random" in str(info.value) and str(cache / "resnet50-deadbeef.pth") in str(info.value)
    assert not (cache / "resnet50-deadbeef.pth").exists()


def test_imagenet_default_file_is_used_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cached = tmp_path / "th" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"present")
    assert weights.imagenet_resnet50(progress=False) == cached  # found: no download attempted
