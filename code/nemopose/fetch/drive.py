"""Google Drive: download addresses and the confirmation page Drive shows for large files.

For a file too large to scan for viruses, ``https://drive.google.com/uc?export=download&id=ID``
answers with an HTML page instead of the file. Older pages carry the token in a link
(``confirm=XXXX``) and a ``download_warning*`` cookie; newer ones hold a form that submits
id, export, confirm and uuid to ``https://drive.usercontent.google.com/download``.
:func:`drive_confirm_url` reads both; :mod:`nemopose.fetch.download` follows it. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from html.parser import HTMLParser
from typing import Mapping

# Module-level so that tests (and users behind a Drive proxy) can point it elsewhere.
DRIVE_BASE_URL = "https://drive.google.com/uc"


def drive_url(file_id: str) -> str:
    """The direct-download address of a Google Drive file (``DRIVE_BASE_URL`` + id)."""
    return f"{DRIVE_BASE_URL}?export=download&id={urllib.parse.quote(file_id, safe='')}"


def drive_view_url(file_id: str) -> str:
    """The address a person opens in a browser to download a Drive file by hand."""
    return f"https://drive.google.com/file/d/{file_id}/view"


def is_drive_url(url: str) -> bool:
    """True for Drive download addresses (``DRIVE_BASE_URL``, drive/docs.google.com)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return url.startswith(DRIVE_BASE_URL) or host in ("drive.google.com", "docs.google.com")


class _PageParser(HTMLParser):
    """Forms (action + hidden inputs), link targets and the title of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_form = self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name") and a.get("type", "").lower() == "hidden":
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def drive_confirm_url(page: str, page_url: str, cookies: Mapping[str, str] | None = None) -> str | None:
    """The URL that confirms a Google Drive "can't scan for viruses" page, or None.

    Recognises, in this order: the newer form (``action=".../download"`` with hidden inputs
    id, export, confirm, uuid; submitted as a GET), a link carrying ``confirm=<token>``, a
    ``download_warning*`` cookie (older pages), and a bare ``confirm=<token>`` in the page
    text (what the authors' wget/sed line extracted).

    Args:
        page: the HTML text Drive answered with.
        page_url: the address that page came from (relative links are resolved against it).
        cookies: cookie name -> value received with the page.

    Returns:
        An absolute URL to request next, or None when the page has no confirmation (quota
        exceeded, no access, not found).
    """
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    for action, fields in parser.forms:
        if "confirm" in fields and "id" in fields:
            target = urllib.parse.urlsplit(urllib.parse.urljoin(page_url, action or page_url))
            return urllib.parse.urlunsplit(target._replace(query=urllib.parse.urlencode(fields), fragment=""))
    for href in parser.links:
        if re.search(r"[?&]confirm=", href):
            return urllib.parse.urljoin(page_url, href)
    for name, value in (cookies or {}).items():
        if name.startswith("download_warning"):
            return _with_query(page_url, confirm=value)
    m = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    return _with_query(page_url, confirm=m.group(1)) if m else None


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def page_title(page: str) -> str:
    """The ``<title>`` of an HTML page, whitespace collapsed ('no title' when absent)."""
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    return " ".join(parser.title.split()) or "no title"
