"""Fetching files over the network, resumably, and the ImageNet ResNet-50 weights.

Nothing here knows about PASCAL3D+ (``data/sources.py`` holds the datasets' archives). The
guarantees, which the tests check against a loopback server:

* :func:`download` streams into ``<dest>.part`` and renames it onto ``dest`` only once the
  size matches what the server announced, so ``dest`` is never a truncated file. A ``.part``
  left by an earlier run, or by a connection dropped mid-transfer, is continued with an HTTP
  ``Range`` request; a server that ignores ``Range`` (answers 200) is read again from byte 0.
* Google Drive (``drive:<id>``): the "can't scan this file for viruses" page that Drive
  serves instead of a large file is parsed (:func:`nemopose.fetch.drive.drive_confirm_url`) and its
  confirmation followed, with the same resume and retries; a page without one (quota
  exceeded, not shared) is a clear :class:`DownloadError`.
* :func:`fetch_archive` tries a list of sources, or only a mirror when one is given.

Archives are unpacked by :mod:`nemopose.fetch.archive`.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import NemoPoseError
from ..cli.progress import LineProgress, progress_bar
from .drive import drive_confirm_url, drive_url, drive_view_url, is_drive_url, page_title

logger = logging.getLogger(__name__)

USER_AGENT = "nemopose-download/1.0 (Python urllib)"
CHUNK_BYTES = 1 << 20
# Pause before resuming a dropped transfer; doubles with every attempt that made no progress.
RETRY_BACKOFF_S = 2.0
RETRY_BACKOFF_MAX_S = 60.0
# Drive may answer the confirmation with another page; more than this many pages is an error.
MAX_HTML_PAGES = 3
MAX_PAGE_BYTES = 2 << 20
DOWNLOAD_MODES = ("auto", "yes", "no")


class DownloadError(NemoPoseError, RuntimeError):
    """A file could not be fetched or unpacked; the message names the URL or file, the problem
    and what to do about it."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the target folder (or is a device); nothing was
    written."""


class _TransferStopped(Exception):
    """Internal: the transfer ended before the announced size; resume it."""


# ----------------------------------------------------------------------------- download


def part_path(dest: str | os.PathLike) -> Path:
    """Where :func:`download` keeps the bytes of ``dest`` received so far."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: str | os.PathLike, *, retries: int = 5, progress: bool = True,
             timeout: float = 60) -> Path:
    """Fetch ``url`` into ``dest`` through ``dest + '.part'``; resumable and retried.

    Args:
        url: ``http(s)://`` (resumed with Range requests), ``ftp://`` (restarted, no resume),
            ``file://`` or a plain local path (copied), ``drive:<id>`` or a Drive ``uc`` URL
            (the Drive confirmation page is followed).
        dest: final file; its folder is created.
        retries: attempts in a row that may fail without receiving a byte before giving up
            (an attempt that makes progress resets the count, so long files on a flaky line
            finish); each waits ``RETRY_BACKOFF_S`` doubling.
        progress: show progress (bytes; :func:`nemopose.progress.progress_bar`).
        timeout: seconds a connection may stay silent before it counts as dropped.

    Returns:
        ``dest``.

    Raises:
        DownloadError naming the URL and the problem; after a dropped transfer the ``.part``
        is kept so that the next call continues it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    with progress_bar(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress, leave=True) as bar:
        if url.startswith("drive:"):
            file_id = url[len("drive:"):]
            _stream_url(drive_url(file_id), part, bar, retries=retries, timeout=timeout,
                        on_html=_drive_page_handler(file_id, dest))
        elif is_drive_url(url):
            file_id = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("id", ["?"])[0]
            _stream_url(url, part, bar, retries=retries, timeout=timeout,
                        on_html=_drive_page_handler(file_id, dest))
        elif scheme in ("http", "https", "ftp"):
            _stream_url(url, part, bar, retries=retries, timeout=timeout, on_html=None)
        elif scheme == "file" or scheme == "" or re.match(r"^[A-Za-z]:[\\/]", url):
            path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path) if scheme == "file" else url
            _copy_local(Path(path), part, bar)
        else:
            raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}; use http(s)://, ftp://, "
                                "file://, a local path or drive:<id>")
    os.replace(part, dest)
    return dest


# fetch_archive's keyword ``download`` (the mode) hides the function inside it.
_download_file = download


def _copy_local(src: Path, part: Path, bar: LineProgress) -> None:
    if not src.is_file():
        raise DownloadError(f"{src}: no such file (local source for {part.name[:-len('.part')]})")
    bar.reset(total=src.stat().st_size)
    with open(src, "rb") as fin, open(part, "wb") as fout:
        for chunk in iter(lambda: fin.read(CHUNK_BYTES), b""):
            fout.write(chunk)
            bar.update(len(chunk))


def _stream_url(url: str, part: Path, bar: LineProgress, *, retries: int, timeout: float,
                on_html: Callable[[bytes, str, Mapping[str, str]], str] | None) -> None:
    """The resume/retry loop shared by http(s), ftp and Drive (see :func:`download`)."""
    jar = http.cookiejar.CookieJar()  # Drive's download_warning cookie must be sent back
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    failures, pages, received_any = 0, 0, False
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if have and not url.lower().startswith("ftp:"):
            headers["Range"] = f"bytes={have}-"
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if (resp.headers.get_content_type() or "") == "text/html":
                    if on_html is None:
                        raise DownloadError(f"{url} answered with an HTML page (Content-Type text/html) "
                                            "instead of the file: a login, error or moved page. Check "
                                            "the address in a browser.")
                    pages += 1
                    if pages > MAX_HTML_PAGES:
                        raise DownloadError(f"{url}: still an HTML page after {MAX_HTML_PAGES} "
                                            "confirmation steps; download the file in a browser")
                    url = on_html(resp.read(MAX_PAGE_BYTES), resp.geturl(), {c.name: c.value for c in jar})
                    continue
                start, total = _response_range(resp, have, url)
                if have and start == 0:
                    logger.info("%s: the server does not resume partial downloads; starting again "
                                "from byte 0", url)
                bar.reset(total=total)
                bar.update(start)
                with open(part, "r+b" if part.exists() else "wb") as fh:
                    fh.seek(start)
                    fh.truncate()
                    # read1: return what has arrived, so a stall loses no received bytes
                    read = getattr(resp, "read1", resp.read)
                    for chunk in iter(lambda: read(CHUNK_BYTES), b""):
                        fh.write(chunk)
                        received_any = True
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size > total:
                part.unlink()
                raise DownloadError(f"{url}: received {size} bytes but the server announced {total}; "
                                    "the partial file was removed, run again to start over")
            if total is not None and size < total:
                raise _TransferStopped(f"connection closed after {size} of {total} bytes")
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                total = _content_range_total(exc.headers.get("Content-Range", ""))
                if total == have:  # the .part was already complete
                    return
                logger.warning("%s: cannot resume %s (HTTP 416); starting again", url, part)
                part.unlink()
                reason: BaseException = exc
            elif exc.code >= 500 or exc.code in (408, 429):  # the server's trouble: wait and retry
                exc.close()
                reason = exc
            else:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            # refused or unknown host before any byte arrived: no point waiting (timeouts are retried)
            if not received_any and not isinstance(exc.reason, TimeoutError):
                raise DownloadError(f"cannot reach {url} ({exc.reason}); check the address, the "
                                    "network or use a mirror") from exc
            reason = exc
        except (_TransferStopped, http.client.IncompleteRead, ConnectionError, TimeoutError,
                http.client.HTTPException) as exc:
            reason = exc
        size = part.stat().st_size if part.exists() else 0
        failures = 0 if size > have else failures + 1
        if failures > retries:
            raise DownloadError(
                f"{url}: the transfer kept failing ({type(reason).__name__}: {reason}); gave up after "
                f"{retries} retries without progress. {size} bytes are kept in {part}; run again "
                "to continue from there.") from reason
        delay = min(RETRY_BACKOFF_S * 2 ** max(failures - 1, 0), RETRY_BACKOFF_MAX_S)
        logger.warning("%s: %s; resuming at byte %d in %.1f s", url, reason, size, delay)
        time.sleep(delay)


def _response_range(resp, have: int, url: str) -> tuple[int, int | None]:
    """(first byte in this response, total size or None) from a 200/206 answer."""
    if getattr(resp, "status", None) == 206:
        m = re.fullmatch(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
        if not m:
            raise DownloadError(f"{url}: partial answer (206) without a usable Content-Range header "
                                f"({resp.headers.get('Content-Range')!r})")
        start = int(m.group(1))
        if start > have:
            raise DownloadError(f"{url}: asked for bytes from {have}, the server sent from {start}")
        return start, None if m.group(3) == "*" else int(m.group(3))
    length = resp.headers.get("Content-Length", "")
    return 0, int(length) if length.strip().isdigit() else None


def _content_range_total(value: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", value or "")
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- Google Drive


def human_url(url: str) -> str:
    """``url`` as shown in messages: ``drive:<id>`` becomes the Drive page of the file."""
    return drive_view_url(url[len("drive:"):]) if url.startswith("drive:") else url


def _drive_page_handler(file_id: str, dest: Path) -> Callable[[bytes, str, Mapping[str, str]], str]:
    def handle(body: bytes, page_url: str, cookies: Mapping[str, str]) -> str:
        page = body.decode("utf-8", "replace")
        nxt = drive_confirm_url(page, page_url, cookies)
        if nxt is None:
            raise DownloadError(
                f"Google Drive answered {page_url} with an HTML page ({page_title(page)!r}) instead of the file "
                "and the page offers no download confirmation: the file's download quota is probably "
                "exceeded ('too many users have viewed or downloaded this file') or it is not shared. "
                f"Try again later, or open {drive_view_url(file_id)} in a browser and save the file "
                f"as {dest}.")
        logger.info("Google Drive asked to confirm the download of %s; following %s", file_id, nxt)
        return nxt
    return handle


# ----------------------------------------------------------------------------- archives


def fetch_archive(name: str, urls: Sequence[str], dest_dir: str | os.PathLike, *,
                  mirror: str | os.PathLike | None = None, download: str = "auto",
                  progress: bool = True, retries: int = 5, timeout: float = 60) -> Path:
    """Make sure archive ``name`` is at ``dest_dir/name``, downloading it when it is not.

    Args:
        name: the archive's file name (also its name under a mirror).
        urls: sources tried in order until one works: URLs or ``drive:<id>``.
        dest_dir: folder the archive is saved in (a ``.part`` there is continued).
        mirror: a base URL or a local folder; when given, ``<mirror>/<name>`` is the ONLY source.
        download: ``auto`` (or ``yes``) fetches a missing archive; ``no`` never touches the
            network and raises instead.
        progress, retries, timeout: as in :func:`download`.

    Returns:
        The archive path. Deleting it after unpacking is the caller's choice
        (:func:`nemopose.fetch.archive.unpack_archive` with ``keep_archive``).

    Raises:
        DownloadError saying which archive is missing, where it is expected and where to get it.
    """
    if download not in DOWNLOAD_MODES:
        raise ValueError(f"download must be one of {DOWNLOAD_MODES}, got {download!r}")
    dest = Path(dest_dir) / name
    if dest.is_file():
        logger.info("%s: using the archive already at %s", name, dest)
        return dest
    sources = [mirror_url(mirror, name)] if mirror is not None else list(urls)
    if download == "no":
        raise DownloadError(f"archive {name} is missing: expected at {dest} and downloading is disabled. "
                            f"Get it from {' or '.join(map(human_url, sources))} and put it there.")
    errors = []
    for src in sources:
        logger.info("%s: fetching from %s", name, human_url(src))
        try:
            return _download_file(src, dest, retries=retries, progress=progress, timeout=timeout)
        except DownloadError as exc:
            logger.warning("%s: %s", name, exc)
            errors.append(f"{human_url(src)}: {exc}")
    where = "\n  ".join(errors) or "(no source given)"
    raise DownloadError(f"could not download {name} into {dest}:\n  {where}\nDownload it by hand from one "
                        f"of these and put it at {dest}, or give a mirror.")


def is_url(text: str) -> bool:
    """Whether ``text`` starts with a URL scheme (``http://``, ``file://``, ...)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text) is not None


def mirror_url(mirror: str | os.PathLike, name: str) -> str:
    """``<mirror>/<name>``: a URL under a base URL, or a path in a local folder."""
    mirror = os.fspath(mirror)
    if is_url(mirror):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(name, safe="+")
    return os.path.join(mirror, name)


# ----------------------------------------------------------------------------- ImageNet weights
