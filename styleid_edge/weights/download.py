"""Download the official files from Google Drive into the cache, robustly. Torch-free.

The host's flow, as documented in public bug reports about Drive downloads:
``GET <base>?id=ID&export=download`` answers either with the file, or, for
files too large for its virus scan, with an HTML warning page whose "Download
anyway" form (hidden inputs such as ``id``, ``export``, ``confirm`` and
``uuid``) or link (``confirm=TOKEN``) leads to the file. When the file is over
its download quota, the host answers with an HTML page ("Too many users have
viewed or downloaded this file recently") or 403/429 instead.

Here: the file goes to ``NAME.part`` (resumed with HTTP Range after a dropped
connection, automatically and on the next run), its size and sha256 are
checked against the registry and the lock file, and only then is it renamed to
``NAME``. urllib's default opener honours HTTP(S)_PROXY / NO_PROXY.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

from .cache import LOCK_NAME, LockFile, format_problem, looks_like_html, resolve_cache_dir, sha256_file, verify_file
from .errors import (
    HostRefusedError,
    IncompleteDownloadError,
    IntegrityError,
    LicenceError,
    OfflineError,
)
from .registry import OFFICIAL_FILES, WeightFile, get_file

log = logging.getLogger(__name__)

URL_ENV = "STYLEID_EDGE_DOWNLOAD_URL"
DEFAULT_URL = "https://drive.usercontent.google.com/download"
USER_AGENT = "styleid-edge-weights/1 (+python urllib)"
CHUNK = 1 << 16
MAX_PAGE = 2 << 20  # an HTML page larger than this is not a confirmation page
QUOTA_PHRASES = ("too many users", "quota", "exceeded", "try again later", "try accessing the file again later")
_DROPPED = (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError, TimeoutError)


@dataclass
class DownloadOptions:
    base_url: str | None = None  # None: $STYLEID_EDGE_DOWNLOAD_URL, else DEFAULT_URL
    retries: int = 3  # automatic resumes after a dropped connection
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    progress: bool | None = None  # None: a bar only on a terminal

    def resolved_base(self) -> str:
        return self.base_url or os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass
class FetchResult:
    name: str
    path: Path
    status: str  # "downloaded" | "cached" | "verified" | "recorded"
    sha256: str | None = None
    size: int = 0


def file_url(spec: WeightFile, base_url: str) -> str:
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}{urlencode({'id': spec.drive_id, 'export': 'download'})}"


# --- the confirmation page ----------------------------------------------------------------
class _PageParser(HTMLParser):
    """Collects forms (action + inputs), links carrying confirm=, and the title of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []  # (action, method, inputs)
        self.links: list[str] = []
        self.title = ""
        self._in_form = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), a.get("method", "get").lower(), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            if a.get("type", "text").lower() not in ("submit", "button", "image", "reset"):
                self.forms[-1][2][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
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


def confirmation_url(page: str, page_url: str) -> str | None:
    """The "download anyway" URL of a virus-scan warning page, or None if the page has none."""
    p = _PageParser()
    p.feed(page)
    for action, method, inputs in p.forms:
        if method == "get" and ("confirm" in inputs or "uuid" in inputs):
            target = urljoin(page_url, action or page_url)
            return f"{target.split('?')[0]}?{urlencode(inputs)}"
    for href in p.links:
        return urljoin(page_url, href)
    return None


def _page_summary(page: str) -> str:
    p = _PageParser()
    p.feed(page)
    return " ".join(p.title.split())[:120]


# --- HTTP ---------------------------------------------------------------------------------
def _opener() -> urllib.request.OpenerDirector:
    # build_opener() adds ProxyHandler() (HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the environment);
    # cookies carry the host's download-warning token from the page to the file request.
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))


def _refused(spec: WeightFile, dest: Path, why: str) -> HostRefusedError:
    return HostRefusedError(
        f"{spec.name}: the download host refused the file ({why}). Google Drive limits how often a shared "
        f"file can be downloaded; retry later (the quota resets within 24 hours), or open "
        f"{spec.browser_url} in a browser, download it there and place it at {dest / spec.name}, then run "
        f"`styleid-edge models fetch --verify` to record its sha256.")


def _offline(spec: WeightFile, dest: Path, url: str, exc: BaseException) -> OfflineError:
    host = urlsplit(url).netloc
    reason = getattr(exc, "reason", exc)
    return OfflineError(
        f"{spec.name}: cannot reach {host} ({reason}). Check the network connection or the proxy "
        f"(HTTPS_PROXY / HTTP_PROXY); or, on another machine, download {spec.browser_url} and place it at "
        f"{dest / spec.name}. Nothing was written under the final name.")


def _open(opener: urllib.request.OpenerDirector, url: str, start: int, timeout: float
          ) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


@dataclass
class _Stream:
    resp: http.client.HTTPResponse
    first: bytes  # already read from resp
    offset: int  # where resp's body starts in the file
    total: int | None  # full file size, when the host says
    url: str  # the URL that gave the file (after confirmation); resumes start there


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    # "bytes START-END/TOTAL" (TOTAL may be "*")
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/")
        start = int(span.split("-")[0])
        return start, (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


def _start_stream(opener: urllib.request.OpenerDirector, spec: WeightFile, dest: Path, url: str, start: int,
                  timeout: float) -> _Stream:
    """Open the file's byte stream, following the confirmation page; `offset` may be 0 if Range was ignored."""
    seen: set[str] = set()
    while True:
        seen.add(url)
        try:
            resp = _open(opener, url, start, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:  # the .part is not a prefix the host can continue
                log.warning("%s: the host cannot resume at byte %d; starting over", spec.name, start)
                start = 0
                continue
            body = exc.read(MAX_PAGE).decode("utf-8", "replace") if exc.fp else ""
            title = _page_summary(body)
            if exc.code in (403, 429) or any(p in body.lower() for p in QUOTA_PHRASES):
                raise _refused(spec, dest, f"HTTP {exc.code}{': ' + title if title else ''}") from None
            if exc.code == 404:
                raise HostRefusedError(
                    f"{spec.name}: the host has no file with id {spec.drive_id} (HTTP 404). The upstream link "
                    f"may have moved; check {spec.source} and place the file at {dest / spec.name}.") from None
            raise HostRefusedError(f"{spec.name}: the host answered HTTP {exc.code} {exc.reason}; retry later, "
                                   f"or download {spec.browser_url} in a browser and place it at "
                                   f"{dest / spec.name}.") from None
        except urllib.error.URLError as exc:
            raise _offline(spec, dest, url, exc) from None
        except (TimeoutError, ConnectionError) as exc:
            raise _offline(spec, dest, url, exc) from None
        ctype = (resp.headers.get("Content-Type") or "").lower()
        first = resp.read(CHUNK) if "text/html" not in ctype else b""
        if "text/html" in ctype or (resp.status == 200 and looks_like_html(first)):
            page = (first + resp.read(MAX_PAGE)).decode("utf-8", "replace")
            resp.close()
            nxt = confirmation_url(page, resp.geturl() or url)
            if nxt and nxt not in seen:
                log.info("%s: large-file confirmation page; confirming", spec.name)
                url = nxt
                continue
            title = _page_summary(page)
            why = (f"an HTML page{': ' + repr(title) if title else ''} instead of the file"
                   + ("" if nxt is None else " (the confirmation loops)"))
            raise _refused(spec, dest, why)
        cr = _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else None
        length = resp.headers.get("Content-Length")
        if cr is not None:
            offset, total = cr
            if offset != start:
                resp.close()
                log.warning("%s: the host resumed at byte %d, not %d; starting over", spec.name, offset, start)
                start = 0
                continue
        else:
            offset = 0
            total = int(length) if length and length.isdigit() else None
            if start:
                log.info("%s: the host ignored the Range request; downloading from the start", spec.name)
        return _Stream(resp, first, offset, total, url)


def _progress_bar(spec: WeightFile, total: int | None, initial: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.name,
                disable=(None if enabled is None else not enabled), leave=False)


def download_file(spec: WeightFile, dest: Path, opts: DownloadOptions | None = None) -> Path:
    """Download ``spec`` into ``dest/NAME.part`` (resuming what is there); returns the complete .part path.

    Size is checked against the host's length and the registry; sha256 is checked by the caller.
    """
    opts = opts or DownloadOptions()
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / f"{spec.name}.part"
    url = file_url(spec, opts.resolved_base())
    opener = _opener()
    drops = 0
    while True:
        start = part.stat().st_size if part.is_file() else 0
        if start:
            log.info("%s: resuming at %.1f MB", spec.name, start / 1e6)
        stream = _start_stream(opener, spec, dest, url, start, opts.timeout_s)
        url = stream.url
        total = stream.total or spec.size
        got = stream.offset
        try:
            with open(part, "ab" if stream.offset else "wb") as f, \
                    _progress_bar(spec, total, stream.offset, opts.progress) as bar:
                block = stream.first
                while block:
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
                    block = stream.resp.read(CHUNK)
            if total is not None and got < total:
                raise http.client.IncompleteRead(b"", total - got)
            break
        except _DROPPED as exc:
            drops += 1
            have = part.stat().st_size if part.is_file() else 0
            if drops > opts.retries:
                raise IncompleteDownloadError(
                    f"{spec.name}: the connection dropped after {have} of {total or '?'} bytes "
                    f"({type(exc).__name__}) and {opts.retries} resumes failed. The partial file {part} is "
                    f"kept: run `styleid-edge models fetch {spec.name}` again to resume.") from None
            log.warning("%s: connection dropped at %d bytes (%s); resuming (%d/%d)", spec.name, have,
                        type(exc).__name__, drops, opts.retries)
            time.sleep(opts.backoff_s * drops)
        finally:
            stream.resp.close()
    size = part.stat().st_size
    if (spec.size is not None and size != spec.size) or (stream.total is not None and size != stream.total):
        part.unlink()
        raise IntegrityError(f"{spec.name}: downloaded {size} bytes, expected {spec.size or stream.total}; "
                             f"the partial file was removed. Run `styleid-edge models fetch {spec.name}` again.")
    return part


# --- fetch: licence, cache, lock ----------------------------------------------------------
def licence_notice(spec: WeightFile) -> str:
    kind = "NON-COMMERCIAL" if spec.non_commercial else "licence"
    return f"{spec.name} [{kind}]: {spec.licence}"


def check_licences(specs: Iterable[WeightFile], accept: bool) -> None:
    """Show each licence; refuse non-commercial files unless accepted."""
    specs = list(specs)
    for spec in specs:
        (log.warning if spec.non_commercial else log.info)("licence: %s", licence_notice(spec))
    refused = [s for s in specs if s.non_commercial and not accept]
    if refused:
        lines = "\n  ".join(licence_notice(s) for s in refused)
        raise LicenceError(
            f"these files are licensed for non-commercial / research use only:\n  {lines}\n"
            f"Re-run with --accept-licence if your use complies with these terms "
            f"(files: {', '.join(s.name for s in refused)}).")


def finalize(spec: WeightFile, part: Path, dest: Path, lock: LockFile) -> FetchResult:
    """Check sha256 against the registry and the lock file, then rename the .part to its final name."""
    digest = sha256_file(part)
    size = part.stat().st_size
    entry = lock.get(spec.name)
    for want, where in ((spec.sha256, "the registry"), (entry.sha256 if entry else None, str(lock.path))):
        if want is not None and digest != want:
            part.unlink()
            raise IntegrityError(
                f"{spec.name}: sha256 {digest} does not match {want} recorded in {where}; the download was "
                f"removed and nothing was written under {dest / spec.name}. Retry later; if the file was "
                f"updated upstream on purpose, delete its entry from {lock.path} and fetch again.")
    final = dest / spec.name
    os.replace(part, final)
    if entry is None:
        lock.record(spec.name, digest, size, spec.drive_id)
    log.info("%s: %.1f MB, sha256 %s", spec.name, size / 1e6, digest)
    return FetchResult(spec.name, final, "downloaded", digest, size)


def fetch(names: Iterable[str] | None = None, cache_dir: str | os.PathLike[str] | None = None, *,
          accept_licence: bool = False, verify: bool = False, lock_path: str | os.PathLike[str] | None = None,
          opts: DownloadOptions | None = None, specs: Iterable[WeightFile] | None = None) -> list[FetchResult]:
    """Make sure the named official files (all by default) are in the cache; returns one result per file.

    ``specs`` overrides the registry entries (tests, mirrors). Cached files are size-checked against the
    lock file, and with ``verify`` hashed and compared with it.
    """
    dest = resolve_cache_dir(cache_dir)
    if specs is None:
        specs = [get_file(n) for n in names] if names else list(OFFICIAL_FILES)
    specs = list(specs)
    lock = LockFile.load(lock_path or dest / LOCK_NAME)
    missing = [s for s in specs if not (dest / s.name).is_file()]
    if missing:
        check_licences(missing, accept_licence)
    results: list[FetchResult] = []
    for spec in specs:
        final = dest / spec.name
        if final.is_file():
            results.append(_check_cached(spec, final, lock, verify))
            continue
        log.info("%s: downloading %s", spec.name, spec.description)
        part = download_file(spec, dest, opts)
        results.append(finalize(spec, part, dest, lock))
    return results


def _check_cached(spec: WeightFile, path: Path, lock: LockFile, verify: bool) -> FetchResult:
    entry = lock.get(spec.name)
    size = path.stat().st_size
    if entry is None:  # first sight of a file put here by hand: check what it is before trusting its sha256
        problem = format_problem(path)
        if problem:
            raise IntegrityError(
                f"{spec.name}: cached file {path} is not the model file: {problem}. Delete it and run "
                f"`styleid-edge models fetch {spec.name}`, or download it again by hand: {spec.browser_url}")
    if verify or entry is None:
        r = verify_file(path, lock, drive_id=spec.drive_id, expected_sha256=spec.sha256)
        if r.status == "mismatch":
            raise IntegrityError(
                f"{spec.name}: cached file {path} has sha256 {r.sha256}, but {r.expected} is recorded "
                f"(lock file {lock.path}). The file changed since it was first downloaded; delete it and run "
                f"`styleid-edge models fetch {spec.name}` again, or, if the change is intended, remove its "
                f"entry from the lock file.")
        return FetchResult(spec.name, path, "verified" if r.status == "ok" else "recorded", r.sha256, size)
    if entry.size != size:
        raise IntegrityError(f"{spec.name}: cached file {path} is {size} bytes, the lock file {lock.path} "
                             f"records {entry.size}; delete it and run `styleid-edge models fetch {spec.name}`.")
    return FetchResult(spec.name, path, "cached", entry.sha256, size)
