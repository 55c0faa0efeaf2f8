"""Tests for cartoondiff.data.download against a local HTTP server on 127.0.0.1.

The server (ThreadingHTTPServer, port 0) serves one archive built from synthetic avatars and
can honour or ignore Range, cut the connection after K bytes once, or announce a wrong size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cartoondiff.data import download as dl
from cartoondiff.runs import cli

N_AVATARS = 4


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; ``requests`` records (path, Range)."""

    data: bytes = b""
    honor_range: bool = True
    cut_after: int | None = None  # drop the connection after this many body bytes, once
    extra_length: int = 0  # announce this many bytes more than are sent (size mismatch)
    status: int | None = None  # answer every request with this error status
    no_length: bool = False  # send no Content-Length: the body ends when the connection closes
    content_type: str = "application/gzip"
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
                cut, state.cut_after = state.cut_after, None
            if state.status is not None:
                self.send_error(state.status)
                return
            total = len(state.data) + state.extra_length
            start = 0
            if rng and state.honor_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self.send_response(200)
            body = state.data[start:]
            if not state.no_length:
                self.send_header("Content-Length", str(total - start))
            self.send_header("Content-Type", state.content_type)
            self.end_headers()
            if cut is not None or state.extra_length or state.no_length:
                body = body[:cut] if cut is not None else body
                self.close_connection = True  # the client sees EOF before Content-Length
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


@dataclass
class Server:
    state: ServerState
    base: str

    def url(self, name: str = "cartoonset10k.tgz") -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A .tgz of ``cartoonset10k/`` holding N_AVATARS generated 64 px avatars (PNG + CSV)."""
    from cartoondiff.data.synthesize import write_cartoonset

    root = tmp_path_factory.mktemp("src")
    write_cartoonset(root / "cartoonset10k", n=N_AVATARS, seed=0, size=64)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / "cartoonset10k", arcname="cartoonset10k")
    return buf.getvalue()


@pytest.fixture
def server(archive_bytes: bytes) -> Iterator[Server]:
    state = ServerState(data=archive_bytes)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Server(state, f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- download


def test_full_download_and_extract(server: Server, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "data"
    archive = dl.download("cartoonset10k", dest, url=server.url(), progress=True)
    assert archive == dest / "cartoonset10k.tgz"
    assert archive.read_bytes() == server.state.data
    assert not (dest / "cartoonset10k.tgz.part").exists()
    assert _sha(server.state.data) in capsys.readouterr().err  # printed so users can pin it
    assert server.state.requests == [("/cartoonset10k.tgz", None)]

    folder = dl.extract(archive, dest)
    assert folder == dest / "cartoonset10k"
    pngs = sorted(p.name for p in folder.glob("*.png"))
    csvs = sorted(p.name for p in folder.glob("*.csv"))
    assert len(pngs) == N_AVATARS and len(csvs) == N_AVATARS
    assert [p[:-4] for p in pngs] == [c[:-4] for c in csvs]
    assert [p.name for p in dest.iterdir() if p.name.startswith(".extract-")] == []
    # extracting again refuses to overwrite, naming the existing folder
    with pytest.raises(dl.DownloadError, match="cartoonset10k already exists"):
        dl.extract(archive, dest)


def test_existing_archive_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False,
                expected_sha256=_sha(server.state.data))
    assert len(server.state.requests) == 1
    with pytest.raises(dl.DownloadError, match="sha256 differs"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False,
                    expected_sha256="0" * 64)


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    k = len(server.state.data) // 3
    server.state.cut_after = k
    with pytest.raises(dl.DownloadError, match=rf"received {k} of {len(server.state.data)}"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False, attempts=1)
    part = tmp_path / "cartoonset10k.tgz.part"
    assert part.stat().st_size == k and not (tmp_path / "cartoonset10k.tgz").exists()

    archive = dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False,
                          expected_sha256=_sha(server.state.data))
    assert server.state.requests == [("/cartoonset10k.tgz", None),
                                     ("/cartoonset10k.tgz", f"bytes={k}-")]
    assert archive.read_bytes() == server.state.data
    assert not part.exists()


def test_interruption_is_retried_within_one_call(server: Server, tmp_path: Path) -> None:
    k = 1000
    server.state.cut_after = k
    archive = dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert [r[1] for r in server.state.requests] == [None, f"bytes={k}-"]
    assert archive.read_bytes() == server.state.data


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path) -> None:
    server.state.honor_range = False
    part = tmp_path / "cartoonset10k.tgz.part"
    part.write_bytes(b"\xff" * 500)  # stale bytes that must not survive a 200 response
    archive = dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert server.state.requests == [("/cartoonset10k.tgz", "bytes=500-")]
    assert archive.read_bytes() == server.state.data


def test_complete_part_is_finished_on_416(server: Server, tmp_path: Path) -> None:
    (tmp_path / "cartoonset10k.tgz.part").write_bytes(server.state.data)
    archive = dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert archive.read_bytes() == server.state.data


def test_size_mismatch_is_an_error(server: Server, tmp_path: Path) -> None:
    server.state.extra_length = 10  # announces 10 bytes it never sends
    n = len(server.state.data)
    with pytest.raises(dl.DownloadError, match=rf"incomplete download .* {n} of {n + 10} bytes"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert not (tmp_path / "cartoonset10k.tgz").exists()


def test_sha256_mismatch_discards_the_download(server: Server, tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match="does not match the expected"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False,
                    expected_sha256="ab" * 32)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_status_and_url(server: Server, tmp_path: Path) -> None:
    server.state.status = 404
    with pytest.raises(dl.DownloadError, match=r"HTTP 404 .* from http://127\.0\.0\.1:\d+/x\.tgz"):
        dl.download(server.url("x.tgz"), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_html_page_is_not_saved_as_archive(server: Server, tmp_path: Path) -> None:
    server.state.content_type = "text/html; charset=utf-8"  # what a sign-in redirect serves
    with pytest.raises(dl.DownloadError, match="returned an HTML page"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_downloads_extracts_and_skips_second_time(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    argv = ["cartoonset10k", f"dest={dest}", f"url={server.url()}", "progress=false"]
    assert dl.main(argv) == dest / "cartoonset10k"
    assert len(list((dest / "cartoonset10k").glob("*.png"))) == N_AVATARS
    dl.main(argv)  # archive and folder present: no request, no extraction
    assert len(server.state.requests) == 1


def test_cli_no_extract(server: Server, tmp_path: Path) -> None:
    argv = ["cartoonset10k", "--dest", str(tmp_path), "--url", server.url(), "extract=false",
            "progress=false"]  # --key value is the same option as key=value
    assert dl.main(argv) == tmp_path / "cartoonset10k.tgz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cartoonset10k.tgz"]


def test_unreachable_host_gives_offline_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cartoonset10k.tgz"
    offline = rf"could not reach 127\.0\.0\.1:{port}: .*no network"
    with pytest.raises(dl.DownloadError, match=offline):
        dl.download("cartoonset10k", tmp_path, url=url, progress=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.execute(dl.main, ["cartoonset10k", f"dest={tmp_path}", f"url={url}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "could not reach" in err and err.count("\n") == 1


def test_unknown_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match="unknown dataset 'cartoonset1m'"):
        dl.download("cartoonset1m", tmp_path)


# ----------------------------------------------------------------------------- extraction


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _malicious_cases(outside: Path) -> dict[str, tuple[list, str, str]]:
    """case -> (members, offending member name, reason fragment)."""
    chr_dev = tarfile.TarInfo("cartoonset10k/tty")
    chr_dev.type = tarfile.CHRTYPE
    return {
        "absolute": ([_file("cartoonset10k/ok.csv"), _file(str(outside / "abs.txt"))],
                     str(outside / "abs.txt"), "absolute path"),
        "dotdot": ([_file("cartoonset10k/ok.csv"), _file("../escape.txt")],
                   "../escape.txt", "'..'"),
        "symlink_out": ([_link("cartoonset10k/link", "../../outside"),
                         _file("cartoonset10k/link/pwned.txt")],
                        "cartoonset10k/link", "outside the destination"),
        "symlink_abs": ([_link("cartoonset10k/link", str(outside))],
                        "cartoonset10k/link", "absolute path"),
        "symlink_chain": ([_link("a", "."), _link("b", "a/.."), _file("b/pwned.txt")],
                          "b", "outside the destination"),
        "hardlink_out": ([_link("cartoonset10k/hl", "../../outside/secret", tarfile.LNKTYPE)],
                         "cartoonset10k/hl", "outside the destination"),
        "device": ([(chr_dev, None)], "cartoonset10k/tty", "device"),
    }


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink_out", "symlink_abs",
                                  "symlink_chain", "hardlink_out", "device"])
def test_malicious_archive_is_refused(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    dest = tmp_path / "work" / "data"
    dest.mkdir(parents=True)
    members, bad, reason = _malicious_cases(outside)[case]
    archive = _tar(tmp_path / "evil.tgz", members)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    with pytest.raises(dl.DownloadError, match="unsafe archive member") as err:
        dl.extract(archive, dest)
    msg = str(err.value)
    assert repr(bad) in msg and reason in msg and "\n" not in msg
    # nothing written anywhere: DEST stays empty (temp dir removed), the rest is unchanged
    assert list(dest.iterdir()) == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (outside / "secret").read_text() == "keep"


def test_links_inside_destination_are_allowed(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tgz", [_file("set/cs1.png", b"png"),
                                         _link("set/alias.png", "cs1.png"),
                                         _link("set/hard.png", "set/cs1.png", tarfile.LNKTYPE)])
    folder = dl.extract(archive, tmp_path / "dest")
    assert folder == tmp_path / "dest" / "set"
    assert (folder / "alias.png").read_bytes() == b"png"
    assert (folder / "hard.png").read_bytes() == b"png"


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(dl.DownloadError, match="cannot extract .*bad.tgz.*delete it") as e:
        dl.extract(bad, tmp_path / "dest")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- wrong archives


def _flip_middle_bit(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0x01
    return bytes(raw)


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WRONG_ARCHIVES = {
    # case: (what the server sends instead of the archive, what the error says)
    "truncated, announced as complete": (lambda good: good[: len(good) // 2],
                                         "served a truncated archive"),
    "one bit flipped": (_flip_middle_bit, "is corrupt"),
    "not gzip, not tar": (lambda good: bytes(range(256)) * 40, "not a tar archive"),
    "an XML error page": (lambda good: b'<?xml version="1.0"?><Error><Code>AccessDenied</Code>'
                          b"</Error>", "is a text page"),
    "another archive": (lambda good: _tgz({"README.txt": b"hello"}), "holds 0 .png and 0 .csv"),
    "images without labels": (lambda good: _tgz({"cartoonset10k/cs1.png": b"png"}),
                              "holds 1 .png and 0 .csv"),
}


@pytest.mark.parametrize("case", list(WRONG_ARCHIVES))
def test_wrong_archive_is_deleted_and_a_rerun_starts_clean(server: Server, tmp_path: Path,
                                                           case: str) -> None:
    good = server.state.data
    make, message = WRONG_ARCHIVES[case]
    server.state.data = make(good)
    server.state.content_type = "application/octet-stream"
    with pytest.raises(dl.DownloadError, match=message) as err:
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert "deleted it" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # before: the bad file stayed as cartoonset10k.tgz
    server.state.data = good  # the mirror is fixed: the same command now works
    dl.main(["cartoonset10k", f"dest={tmp_path}", f"url={server.url()}", "progress=false"])
    assert len(list((tmp_path / "cartoonset10k").glob("*.png"))) == N_AVATARS


def test_cut_stream_of_unknown_size_is_kept_and_resumed(server: Server, tmp_path: Path) -> None:
    server.state.no_length = True  # nothing to compare the received size with
    server.state.cut_after = len(server.state.data) // 2
    with pytest.raises(dl.DownloadError, match="incomplete download .* rerun to resume"):
        dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False, attempts=1)
    part = tmp_path / "cartoonset10k.tgz.part"
    assert part.stat().st_size == len(server.state.data) // 2
    assert not (tmp_path / "cartoonset10k.tgz").exists()  # before: kept as the archive
    archive = dl.download("cartoonset10k", tmp_path, url=server.url(), progress=False)
    assert server.state.requests[-1][1] == f"bytes={len(server.state.data) // 2}-"
    assert archive.read_bytes() == server.state.data


def test_bad_archive_already_in_dest_is_named_not_deleted(server: Server, tmp_path: Path,
                                                          capsys) -> None:
    archive = tmp_path / "cartoonset10k.tgz"
    archive.write_bytes(server.state.data[:1000])  # e.g. left by an older version
    argv = ["cartoonset10k", f"dest={tmp_path}", f"url={server.url()}", "progress=false"]
    with pytest.raises(dl.DownloadError) as info:
        dl.main(argv)
    err = str(info.value)
    assert f"delete {archive} and rerun" in err and "truncated" in err
    assert archive.stat().st_size == 1000 and server.state.requests == []  # kept, not fetched
    archive.unlink()  # doing what the message says fixes it
    dl.main(argv)
    assert (tmp_path / "cartoonset10k").is_dir()


def test_verify_archive_counts_members(archive_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "a.tgz"
    path.write_bytes(archive_bytes)
    assert dl.verify_archive(path) == (N_AVATARS, N_AVATARS)
    plain = tmp_path / "a.tar"
    plain.write_bytes(gzip.decompress(archive_bytes))  # an uncompressed tar is fine too
    assert dl.verify_archive(plain) == (N_AVATARS, N_AVATARS)
    with pytest.raises(dl.TruncatedArchiveError):
        plain.write_bytes(plain.read_bytes()[:3000])
        dl.verify_archive(plain)
