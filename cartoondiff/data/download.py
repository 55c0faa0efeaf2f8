"""Download and safely extract the official Cartoon Set archives.

    python -m cartoondiff.data.download cartoonset10k dest=data/
    python -m cartoondiff.data.download cartoonset100k dest=data/ url=https://mirror/x.tgz

The archive is streamed to ``DEST/<name>.tgz.part``; an interrupted download is resumed with
an HTTP ``Range`` request (on this run's retry or the next run), and the file is renamed to
``DEST/<name>.tgz`` only once its size matches what the server announced, its sha256 matches
the one given (``sha256=``), and ``verify_archive`` has read it to the end: gzip CRC and
length, every tar header, PNG (and CSV) members. A download that fails these checks is
deleted (a truncated one of unknown size is kept to resume), so a rerun starts clean; an
archive already in ``DEST`` that fails them is named in the error with the advice to delete
it. Extraction refuses any member that could write or point outside ``DEST`` and happens in
a temporary directory that is moved into place only when every member was extracted.

Standard library only (urllib, tarfile, hashlib) plus tqdm for the progress bar.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType

from cartoondiff.runs import cli
from cartoondiff.runs.errors import UserError
from cartoondiff.runs.files import check_folder
from cartoondiff.runs.progress import progress_bar


class DownloadError(UserError, RuntimeError):
    """A download or extraction failed; the message is one line naming the URL, file or member."""


class TruncatedArchiveError(DownloadError):
    """The archive ends early: resuming the download may complete it."""


_BASE = "https://storage.cloud.google.com/cartoonset_public_files"
# name -> URL; NAME.tgz unpacks to the folder NAME. Sizes and digests of the official archives
# are not published: Content-Length is checked instead and the sha256 printed to pin it.
SOURCES: MappingProxyType[str, str] = MappingProxyType(
    {name: f"{_BASE}/{name}.tgz" for name in ("cartoonset10k", "cartoonset100k")})

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


# ----------------------------------------------------------------------------- download


def _one_line(err: BaseException) -> str:
    """An exception's message with its line breaks (tarfile lists one per method) folded."""
    return " ".join(str(err).split())


def _say(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (the downloads' and the cache's checksum)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _open(url: str, offset: int) -> http.client.HTTPResponse | urllib.error.HTTPError:
    """GET ``url`` (from byte ``offset`` when > 0); the response, or the HTTP 416 error (whose
    Content-Range gives the size) when the offset is at or past the end. Other failures
    become DownloadError."""
    headers = {"User-Agent": "cartoondiff-download/1"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        return urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return e
        e.close()
        raise DownloadError(f"HTTP {e.code} {e.reason} from {url}") from e
    except http.client.HTTPException as e:
        raise DownloadError(f"bad response from {host}: {e!r}") from e
    except OSError as e:  # URLError's reason is the socket's error
        why = e.reason if isinstance(e, urllib.error.URLError) else e
        raise DownloadError(f"could not reach {host}: {why} (no network?)") from e


def _fetch_once(url: str, part: Path, label: str, progress: bool) -> tuple[int | None, bool]:
    """One HTTP request writing to ``part``; returns (announced total size or None, got bytes).

    206 = server honoured our Range: append. 200 = full body (server ignored Range, or fresh
    start): truncate and write from byte 0. 416 = our offset is at/after the end: either the
    .part is already complete or it belongs to a different file, in which case start over.
    """
    offset = part.stat().st_size if part.exists() else 0
    with _open(url, offset) as resp:
        status = resp.status
        if status == 416:
            m = re.search(r"/(\d+)", resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return offset, False  # .part already holds the whole file
            _say(f"{label}: server refused resuming at byte {offset}; starting over", progress)
            part.unlink()
            return None, True
        if resp.headers.get("Content-Type", "").startswith("text/html"):
            # e.g. a sign-in or error page after a redirect: never save it as the archive
            raise DownloadError(f"{resp.geturl()} returned an HTML page, not an archive "
                                "(login or error page?); try --url with a direct link")
        total: int | None
        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                raise DownloadError(f"{url}: bad Content-Range "
                                    f"{resp.headers.get('Content-Range')!r} for offset {offset}")
            total = None if m.group(3) == "*" else int(m.group(3))
            mode = "ab"
            if offset:
                _say(f"{label}: resuming at byte {offset}", progress)
        elif status == 200:
            if offset:
                _say(f"{label}: server ignored the Range request; restarting from 0", progress)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        else:
            raise DownloadError(f"unexpected HTTP {status} from {url}")

        received = 0
        bar = progress_bar(total=total, initial=offset, unit="B", unit_scale=True,
                           unit_divisor=1024, desc=label, enabled=progress)
        with open(part, mode) as f, bar:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                pass  # connection dropped: keep what arrived, the caller decides to resume
    return total, received > 0


def download(name_or_url: str, dest: str | Path, url: str | None = None,
             expected_sha256: str | None = None, progress: bool = True,
             attempts: int = 3) -> Path:
    """Download an archive into ``dest`` and return the path of the complete ``.tgz``.

    ``name_or_url`` is a key of SOURCES ("cartoonset10k", "cartoonset100k") or a URL; ``url``
    overrides where a named archive is fetched from (mirrors, tests). An archive already in
    ``dest`` is not fetched again (only checked, by ``expected_sha256`` when given). Up to
    ``attempts`` requests are made while bytes keep arriving; what arrived stays in
    ``<name>.part`` so a later call resumes it.
    """
    given = urllib.parse.urlsplit(name_or_url)
    if name_or_url in SOURCES:
        url, filename = url or SOURCES[name_or_url], f"{name_or_url}.tgz"
    elif given.scheme in ("http", "https"):
        url, filename = url or name_or_url, PurePosixPath(given.path).name
        if not filename:
            raise DownloadError(f"cannot derive an archive name from URL {name_or_url!r}")
    else:
        raise DownloadError(f"unknown dataset {name_or_url!r}: expected one of "
                            f"{sorted(SOURCES)} or an http(s) URL")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / filename
    part = dest / (filename + ".part")

    if archive.exists():
        _say(f"{archive} already exists; checking it instead of downloading", progress)
        if expected_sha256 and sha256_of(archive) != expected_sha256.lower():
            raise DownloadError(f"{archive}: sha256 differs from the expected {expected_sha256}; "
                                "delete it and rerun")
        try:
            verify_archive(archive, labeled=name_or_url in SOURCES)
        except DownloadError as e:  # not ours to delete: the user may have put it there
            raise DownloadError(f"{e}; delete {archive} and rerun to download it again") from None
        return archive

    for _ in range(max(1, attempts)):  # at least one: total and size are set below
        total, moved = _fetch_once(url, part, filename, progress)
        size = part.stat().st_size if part.exists() else 0
        # complete, or no size announced and the stream ended; or no new bytes: retrying
        # would not help
        if not moved or size == total or (total is None and size > 0):
            break
    if size == 0:
        raise DownloadError(f"no data received from {url}")
    if total is None:
        _say(f"{url}: server sent no size; cannot check the download is complete", progress)
    elif size != total:
        raise DownloadError(f"incomplete download of {url}: received {size} of {total} bytes "
                            f"(partial data kept in {part}; rerun to resume)")

    digest = sha256_of(part)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: sha256 {digest} does not match the expected "
                            f"{expected_sha256}")
    try:
        verify_archive(part, labeled=name_or_url in SOURCES)
    except TruncatedArchiveError as e:
        if total is None:  # the stream may just have stopped early: more bytes may finish it
            raise DownloadError(f"incomplete download of {url}: {e} (partial data kept in "
                                f"{part}; rerun to resume)") from None
        part.unlink()  # complete by its announced size, so the server's file is cut short
        raise DownloadError(f"{url} served a truncated archive ({e}); deleted it, try another "
                            "--url") from None
    except DownloadError as e:
        part.unlink()
        raise DownloadError(f"{url} did not serve a usable archive: {e}; deleted it, check "
                            "the URL or try another --url") from None
    os.replace(part, archive)
    _say(f"sha256 {digest}  {archive}", progress)
    return archive


def verify_archive(path: str | Path, labeled: bool = True) -> tuple[int, int]:
    """Read a .tgz/.tar to its end without extracting (the checks the module docstring lists;
    CSV labels only when ``labeled``); return its (PNG, CSV) member counts. Raises
    ``TruncatedArchiveError`` when the data ends early and ``DownloadError`` for anything
    else; both name the file. Costs one decompression pass, about as long as extracting.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise DownloadError(f"{path} is empty")
    if head.lstrip()[:1] == b"<":
        raise DownloadError(f"{path} is a text page (HTML or XML: a login or error page?), "
                            "not an archive")
    pngs = csvs = 0
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if head[:2] == b"\x1f\x8b" else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # r|: one pass, in order
                for member in tar:
                    if member.isfile():
                        pngs += member.name.endswith(".png")
                        csvs += member.name.endswith(".csv")
            while stream.read(_CHUNK):  # to the end: gzip checks CRC32 and length there
                pass
    except EOFError as e:
        raise TruncatedArchiveError(f"{path} is truncated ({e})") from None
    except tarfile.ReadError as e:
        if "unexpected end" in str(e) or "truncated" in str(e):
            raise TruncatedArchiveError(f"{path} is truncated ({e})") from None
        raise DownloadError(f"{path} is not a tar archive ({_one_line(e)})") from None
    except (gzip.BadGzipFile, zlib.error, tarfile.TarError) as e:
        raise DownloadError(f"{path} is corrupt ({_one_line(e)})") from None
    if pngs == 0 or (labeled and csvs == 0):
        raise DownloadError(f"{path} holds {pngs} .png and {csvs} .csv files, not Cartoon Set "
                            "images" + (" and labels" if labeled else ""))
    return pngs, csvs


# ----------------------------------------------------------------------------- extraction


def _safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """``member`` as tarfile's "data" filter lets it through: no device files, no path or link
    leaving ``dest`` (judged by where it lands, through links extracted before it), no link
    to an absolute path. Raises DownloadError naming the member; our own checks come first
    for what the filter would not refuse (it strips a leading "/") or would name less plainly.
    """
    def refuse(why: str) -> DownloadError:
        return DownloadError(f"unsafe archive member {member.name!r}: {why}")

    name = PureWindowsPath(member.name)  # splits at "/" and "\\" both: stricter than POSIX
    if member.ischr() or member.isblk() or member.isfifo():
        raise refuse("device or fifo files are not allowed")
    if name.anchor:  # "/x", "\\x", "C:x", "//host/share"
        raise refuse("absolute path")
    if ".." in name.parts:
        raise refuse("'..' path component")
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:  # its message names the member
        raise DownloadError(f"unsafe archive member: {e}") from None


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` (.tgz/.tar) into ``dest``; return the single top-level folder, else dest.

    Each member passes ``_safe``; a temporary folder in ``dest`` receives them, and its entries
    move into ``dest`` once all succeeded, never over existing ones.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DownloadError(f"archive not found: {archive}")
    if not hasattr(tarfile, "data_filter"):
        raise DownloadError(f"cannot extract {archive} safely: this Python has no tarfile data "
                            "filter (3.10.12, 3.11.4 and later have it); or use extract=false")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter=_safe)  # member by member: one decompression
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DownloadError(f"cannot extract {archive}: it is damaged ({_one_line(e)}); "
                                "delete it and rerun to download it again") from e
        except OSError as e:  # the destination's fault (disk full, permissions), not the archive's
            raise DownloadError(f"cannot extract {archive} into {dest}: {e}") from e
        entries = sorted(os.listdir(tmp))
        if not entries:
            raise DownloadError(f"archive {archive} is empty")
        for entry in entries:
            if os.path.lexists(dest / entry):  # a broken symlink too
                raise DownloadError(f"{dest / entry} already exists; remove it to extract again")
        for entry in entries:
            os.replace(os.path.join(tmp, entry), dest / entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(entries) == 1 and (dest / entries[0]).is_dir():
        return dest / entries[0]
    return dest


# ----------------------------------------------------------------------------- CLI


USAGE = ("python -m cartoondiff.data.download cartoonset10k|cartoonset100k dest=DIR [url=URL] "
         "[sha256=HEX] [extract=true] [progress=true]")
OPTIONS = {
    "dest": cli.Option(None, "the folder the archive is downloaded and extracted into; "
                       "required", "DIR"),
    "url": cli.Option(None, "a mirror to download from; null: the official bucket"),
    "sha256": cli.Option(None, "the archive's expected sha256; null: not checked (printed)"),
    "extract": cli.Option(True, "extract the archive after verifying it"),
    "progress": cli.Option(True, "show a progress bar (a line every 10% when not a terminal)"),
}


def main(argv: list[str]) -> Path:
    """CLI: download (resumable), verify and extract one archive; prints and returns where."""
    args = cli.parse(argv, OPTIONS, USAGE, about=__doc__,
                     example="python -m cartoondiff.data.download cartoonset10k dest=data/")
    opts = args.options
    if len(args.positional) != 1 or args.positional[0] not in SOURCES or opts["dest"] is None:
        raise cli.UsageError(f"name one archive ({', '.join(sorted(SOURCES))}) and dest=DIR "
                             f"(usage: {USAGE})")
    name, progress = args.positional[0], opts["progress"] is True
    dest = check_folder("dest", opts["dest"])
    folder = dest / name
    if opts["extract"] and folder.is_dir():
        _say(f"{folder} already exists; nothing to download or extract", progress)
        print(folder)
        return folder
    try:
        archive = download(name, dest, url=opts["url"], expected_sha256=opts["sha256"],
                           progress=progress)
    except KeyboardInterrupt:
        raise DownloadError("interrupted; rerun the same command to resume") from None
    result = extract(archive, dest) if opts["extract"] else archive
    print(result)
    return result


if __name__ == "__main__":
    cli.execute(main)
