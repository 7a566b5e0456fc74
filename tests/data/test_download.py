"""`download_posters` and `postergenre download` against a local HTTP server: what is kept, what
is retried and how, the Kaggle list as it is, and a run interrupted then resumed."""

from __future__ import annotations

import asyncio
import csv
import errno
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from postergenre import __version__
from postergenre.cli import main
from postergenre.data.download import DownloadFolderError, download_posters
from postergenre.data.labels import load_posters
from postergenre.data.poster_fetch import USER_AGENT, retry_after_seconds
from postergenre.data.url_list import IdColumnMissing, UrlColumnMissing
from tests.conftest import make_poster

# Small limits and backoffs keep each test well under a few seconds.
FAST = {
    "concurrency": 4,
    "timeout": 0.5,
    "deadline": 5.0,
    "retries": 2,
    "backoff": 0.01,
    "max_backoff": 0.05,
    "rate": 0,
    "progress": False,
}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


class PosterServer(ThreadingHTTPServer):
    """A local server whose behaviour is chosen by the path (see `Handler.do_GET`); it records
    every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []  # (time, path, user agent)
        self.delay = 0.0  # seconds before each poster is served
        # posters named here wait until `gate` is set (a run can then never finish early)
        self.gated: set[str] = set()
        self.gate = threading.Event()
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def times(self, prefix: str) -> list[float]:
        return [t for t, path, _ in self.log if path.startswith(prefix)]


class Handler(BaseHTTPRequestHandler):
    server: PosterServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.hits[self.path] += 1
            hit = srv.hits[self.path]
            srv.log.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            srv.active += 1
            srv.peak = max(srv.peak, srv.active)
        try:
            self._route(hit)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as the test wanted
        finally:
            with srv.lock:
                srv.active -= 1

    def _route(self, hit: int) -> None:
        _, kind, *rest = self.path.split("/")
        name = rest[-1] if rest else ""
        if kind == "p":  # a poster by name, 404 when it is not (yet) there
            self._poster(name)
        elif kind == "status":
            self._send(int(name), b"no")
        elif kind == "flaky":
            self._send(500, b"oops") if hit == 1 else self._poster(name)
        elif kind == "busy":
            self._send(429, b"slow down", {"Retry-After": "1"}) if hit == 1 else self._poster(name)
        elif kind == "html":
            self._send(200, b"<html><body>Not found, but 200</body></html>", {}, "text/html")
        elif kind == "slow":  # stalls mid-body for longer than the read timeout
            self._head(200, {"Content-Length": "1000"})
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(1.5)
            self.wfile.write(b"x" * 990)
        elif kind == "trickle":  # a byte every 50 ms: never idle long, but slow in all
            self._head(200, {"Content-Length": "100"})
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif kind == "truncated":  # promises more than it sends, then closes
            body = self.server.files[name]
            self._head(200, {"Content-Length": str(len(body) + 500)})
            self.wfile.write(body)
        elif kind == "redirect":  # /redirect/<hops>/<name> -> ... -> /p/<name>
            hops = int(rest[0])
            target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/p/{name}"
            self._send(302, b"", {"Location": target})
        elif kind == "loop":
            self._send(302, b"", {"Location": "/loop/b" if name == "a" else "/loop/a"})
        elif kind == "big":  # no Content-Length: only counting the bytes can stop it
            self._head(200, {})
            for _ in range(40):
                self.wfile.write(b"\0" * 65536)
        elif kind == "declared-big":
            self._head(200, {"Content-Length": str(10**9)})
        else:
            self._send(404, b"unknown route")

    def _head(self, status: int, headers: dict[str, str], kind: str = "image/png") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, headers: dict | None = None, kind: str = "text/plain"
    ) -> None:
        self._head(status, {"Content-Length": str(len(body)), **(headers or {})}, kind)
        self.wfile.write(body)

    def _poster(self, name: str) -> None:
        if name not in self.server.files:
            self._send(404, b"no such poster")
            return
        time.sleep(self.server.delay)
        if name in self.server.gated:
            self.server.gate.wait(timeout=60)
        self._send(200, self.server.files[name], kind="image/jpeg")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests go straight to the local server, whatever proxy the machine has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    srv = PosterServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def add_posters(srv: PosterServer, folder: Path, names: list[str]) -> dict[str, bytes]:
    """Generated posters served as /p/<name>; the name's extension picks the format."""
    for i, name in enumerate(names):
        path = make_poster(folder / name, (40 + 9 * i, 120, 200 - 7 * i), seed=i)
        srv.files[name] = path.read_bytes()
    return srv.files


def url_list(path: Path, rows: list[tuple[str, str]], header: str = "id,url") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def failures_by_id(out: Path) -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in read_csv(out / "failures.csv")}


def files_under(root: Path) -> dict[str, bytes]:
    """Every file (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def download(tmp_path: Path, srv: PosterServer, rows: list[tuple[str, str]], **limits):
    labels = url_list(tmp_path / "list.csv", [(i, srv.url(u) if u else "") for i, u in rows])
    out = tmp_path / "out"
    return download_posters(labels, out, **{**FAST, **limits}), out


# -- what is kept ---------------------------------------------------------------------------


def test_good_posters_are_kept_under_their_decoded_format_and_train_can_read_them(server, tmp_path):
    names = ["a.png", "b.jpg", "c.webp", "d.jpg", "e.tif"]
    files = add_posters(server, tmp_path / "src", names)
    files["d.jpg"] = files["a.png"]  # a PNG behind a .jpg URL is stored as .png
    rows = [("1", "/p/a.png"), ("tt0000002", "/p/b.jpg"), ("c-poster", "/p/c.webp")]
    report, out = download(tmp_path, server, [*rows, ("4", "/p/d.jpg"), ("5", "/p/e.tif")])

    assert (report.downloaded, report.already_there, report.failed) == (5, 0, 0)
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "c-poster.webp",
        "tt0000001.png",
        "tt0000002.jpg",
        "tt0000004.png",
        "tt0000005.png",  # TIFF, which the label reader does not list, is stored as PNG
    ]
    assert (out / "images" / "tt0000002.jpg").read_bytes() == files["b.jpg"]
    labels = read_csv(out / "labels.csv")
    assert list(labels[0]) == ["id", "genres", "title", "year", "url"]
    ids = ["tt0000001", "tt0000002", "c-poster", "tt0000004", "tt0000005"]
    assert [r["id"] for r in labels] == ids
    assert labels[0]["url"] == server.url("/p/a.png")
    assert read_csv(out / "failures.csv") == []
    assert {agent for _, _, agent in server.log} == {USER_AGENT}
    assert f"postergenre/{__version__}" in USER_AGENT
    collection = load_posters(labels=out / "labels.csv")
    assert {r.id: r.path.name for r in collection.records}["tt0000001"] == "tt0000001.png"
    assert no_temporaries(out)


def test_an_html_page_served_with_200_is_not_kept(server, tmp_path):
    report, out = download(tmp_path, server, [("1", "/html/x")])

    assert failures_by_id(out)["tt0000001"]["reason"] == "not an image"
    assert failures_by_id(out)["tt0000001"]["attempts"] == "1"  # not retried
    assert not list((out / "images").iterdir())
    assert report.failure_counts() == {"not an image": 1}


def test_unreachable_hosts_are_retried_and_bad_urls_are_not_requested(server, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    labels = url_list(
        tmp_path / "list.csv",
        [("1", f"http://127.0.0.1:{closed}/a.png"), ("2", "ftp://example.invalid/a.png")],
    )
    download_posters(labels, tmp_path / "out", **FAST)

    failures = failures_by_id(tmp_path / "out")
    assert failures["tt0000001"]["reason"] == "connection error"
    assert failures["tt0000001"]["attempts"] == str(FAST["retries"] + 1)
    assert failures["tt0000002"]["reason"] == "bad url"
    assert failures["tt0000002"]["attempts"] == "0"


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 403, 410])
def test_client_errors_are_not_retried(server, tmp_path, status):
    report, out = download(tmp_path, server, [("1", f"/status/{status}")])

    assert failures_by_id(out)["tt0000001"] == {
        "id": "tt0000001",
        "url": server.url(f"/status/{status}"),
        "reason": f"http {status}",
        "attempts": "1",
    }
    assert server.hits[f"/status/{status}"] == 1
    assert report.failed == 1 and report.downloaded == 0


def test_a_server_error_is_retried_and_the_poster_kept(server, tmp_path):
    files = add_posters(server, tmp_path / "src", ["a.jpg"])
    report, out = download(tmp_path, server, [("1", "/flaky/a.jpg")])

    assert server.hits["/flaky/a.jpg"] == 2
    assert report.downloaded == 1 and report.failed == 0
    assert (out / "images" / "tt0000001.jpg").read_bytes() == files["a.jpg"]


def test_429_waits_as_retry_after_says(server, tmp_path):
    add_posters(server, tmp_path / "src", ["a.png"])
    report, out = download(tmp_path, server, [("1", "/busy/a.png")])

    first, second = server.times("/busy/")
    assert second - first >= 0.95  # Retry-After: 1, though the backoff base is 10 ms
    assert report.downloaded == 1
    assert (out / "images" / "tt0000001.png").is_file()


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("1") == 1.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_a_body_slower_than_the_timeout_fails_after_its_retries(server, tmp_path):
    start = time.monotonic()
    _, out = download(tmp_path, server, [("1", "/slow/x")], timeout=0.3, retries=1)

    assert failures_by_id(out)["tt0000001"]["reason"] == "timeout (read)"
    assert failures_by_id(out)["tt0000001"]["attempts"] == "2"
    assert server.hits["/slow/x"] == 2
    assert time.monotonic() - start < 1.5  # did not wait for the server's stalled bytes
    assert not list((out / "images").iterdir())


def test_the_deadline_stops_a_body_that_trickles(server, tmp_path):
    report, out = download(
        tmp_path, server, [("1", "/trickle/x")], timeout=0.5, deadline=0.4, retries=0
    )

    assert failures_by_id(out)["tt0000001"]["reason"] == "timeout (deadline)"
    assert report.failed == 1


def test_a_truncated_body_leaves_no_file(server, tmp_path):
    add_posters(server, tmp_path / "src", ["a.png"])
    _, out = download(tmp_path, server, [("1", "/truncated/a.png")], retries=1)

    failure = failures_by_id(out)["tt0000001"]
    assert failure["reason"] == "truncated body" and failure["attempts"] == "2"
    assert not list((out / "images").iterdir())
    assert no_temporaries(out)


# -- redirects and sizes --------------------------------------------------------------------


def test_redirects_are_followed_a_bounded_number_of_times(server, tmp_path):
    files = add_posters(server, tmp_path / "src", ["a.png"])
    rows = [("1", "/redirect/3/a.png"), ("2", "/loop/a"), ("3", "/redirect/7/a.png")]
    report, out = download(tmp_path, server, rows, max_redirects=5)

    assert (out / "images" / "tt0000001.png").read_bytes() == files["a.png"]
    failures = failures_by_id(out)
    assert failures["tt0000002"]["reason"] == "redirect loop"
    assert failures["tt0000003"]["reason"] == "too many redirects"
    assert server.hits["/loop/a"] == 1 and server.hits["/loop/b"] == 1  # refused, not retried
    assert report.downloaded == 1 and report.failed == 2


def test_an_oversized_body_is_refused(server, tmp_path):
    add_posters(server, tmp_path / "src", ["a.png"])
    rows = [("1", "/big/x"), ("2", "/declared-big/x"), ("3", "/p/a.png")]
    report, out = download(tmp_path, server, rows, max_bytes=100_000)

    failures = failures_by_id(out)
    assert failures["tt0000001"]["reason"] == "too large"
    assert failures["tt0000002"]["reason"] == "too large"
    assert failures["tt0000001"]["attempts"] == "1"
    assert [p.name for p in (out / "images").iterdir()] == ["tt0000003.png"]
    assert report.failure_counts() == {"too large": 2}


# -- limits ---------------------------------------------------------------------------------


def test_concurrency_and_the_per_host_rate_are_bounded(server, tmp_path):
    add_posters(server, tmp_path / "src", [f"{i}.png" for i in range(6)])
    server.delay = 0.15
    rows = [(str(i), f"/p/{i}.png") for i in range(6)]
    (tmp_path / "a").mkdir()
    report, _ = download(tmp_path / "a", server, rows, concurrency=2)
    assert report.downloaded == 6
    assert server.peak == 2

    server.delay, server.peak, server.log = 0.0, 0, []
    (tmp_path / "b").mkdir()
    download(tmp_path / "b", server, rows[:5], concurrency=5, rate=10)
    times = server.times("/p/")
    assert len(times) == 5 and max(times) - min(times) >= 0.35  # 4 gaps of 0.1 s
    assert server.peak <= 2  # never all five at once


# -- the Kaggle list ------------------------------------------------------------------------


def test_the_kaggle_movie_genre_csv_as_it_is(server, tmp_path):
    files = add_posters(server, tmp_path / "src", ["toy.jpg", "amelie.jpg", "tiger.png"])
    text = (
        "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"
        f"114709,http://www.imdb.com/title/tt114709,Toy Story (1995),8.3,Animation|Adventure|"
        f"Comedy,{server.url('/p/toy.jpg')}\n"
        f"211915,http://www.imdb.com/title/tt211915,Le fabuleux destin d'Amélie Poulain (2001),"
        f"8.4,Comedy|Romance,{server.url('/p/amelie.jpg')}\n"
        "113497,http://www.imdb.com/title/tt113497,Jumanji (1995),6.9,Action|Adventure|Family,\n"
        f'190332,http://www.imdb.com/title/tt190332,"Crouching Tiger, Hidden Dragon (2000)",7.9,'
        f"Action|Adventure,{server.url('/p/tiger.png')}\n"
        f"114709,http://www.imdb.com/title/tt114709,Toy Story (1995),8.3,Animation|Family,"
        f"{server.url('/p/toy.jpg')}\n"
    )
    labels = tmp_path / "MovieGenre.csv"
    labels.write_bytes(text.encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        labels.read_text(encoding="utf-8")  # really Latin-1

    report = download_posters(labels, tmp_path / "out", **FAST)

    out = tmp_path / "out"
    assert (out / "labels.csv").read_text(encoding="utf-8").splitlines() == [
        "id,genres,title,year,url",
        f"tt0114709,Animation|Adventure|Comedy|Family,Toy Story,1995,{server.url('/p/toy.jpg')}",
        f"tt0211915,Comedy|Romance,Le fabuleux destin d'Amélie Poulain,2001,"
        f"{server.url('/p/amelie.jpg')}",
        f'tt0190332,Action|Adventure,"Crouching Tiger, Hidden Dragon",2000,'
        f"{server.url('/p/tiger.png')}",
    ]
    assert read_csv(out / "failures.csv") == [
        {"id": "tt0113497", "url": "", "reason": "no url", "attempts": "0"}
    ]
    assert (out / "images" / "tt0114709.jpg").read_bytes() == files["toy.jpg"]
    assert server.hits["/p/toy.jpg"] == 1  # the repeated row is one poster
    assert (report.downloaded, report.failed, report.duplicates) == (3, 1, 1)

    collection = load_posters(labels=out / "labels.csv")
    by_id = {r.id: r for r in collection.records}
    assert sorted(by_id) == ["tt0114709", "tt0190332", "tt0211915"]
    assert by_id["tt0211915"].genres == ("Comedy", "Romance")
    assert by_id["tt0190332"].path == out / "images" / "tt0190332.png"


def test_columns_can_be_named_and_missing_ones_are_user_errors(server, tmp_path):
    add_posters(server, tmp_path / "src", ["a.png"])
    labels = url_list(tmp_path / "art.csv", [("m1", server.url("/p/a.png"))], "movie,art")

    with pytest.raises(IdColumnMissing, match="no id column"):
        download_posters(labels, tmp_path / "out", **FAST)
    with pytest.raises(UrlColumnMissing, match="no URL column"):
        download_posters(labels, tmp_path / "out", id_column="movie", **FAST)
    report = download_posters(labels, tmp_path / "out", id_column="Movie", url_column="ART", **FAST)
    assert report.downloaded == 1 and (tmp_path / "out" / "images" / "m1.png").is_file()

    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(DownloadFolderError):
        download_posters(labels, tmp_path / "taken", id_column="movie", url_column="art", **FAST)


# -- resuming -------------------------------------------------------------------------------


def test_a_rerun_skips_valid_images_without_a_request_and_retries_failures(server, tmp_path):
    files = add_posters(server, tmp_path / "src", ["a.png", "b.png"])
    rows = [("1", "/p/a.png"), ("2", "/p/b.png"), ("3", "/p/c.png"), ("4", "")]
    report, out = download(tmp_path, server, rows)
    assert (report.downloaded, report.failed) == (2, 2)
    assert failures_by_id(out)["tt0000004"] == {
        "id": "tt0000004",
        "url": "",
        "reason": "no url",
        "attempts": "0",
    }

    add_posters(server, tmp_path / "src2", ["c.png"])  # the missing poster appears
    (out / "images" / "tt0000002.png").write_bytes(b"not a poster any more")
    report, out = download(tmp_path, server, rows)

    assert server.hits["/p/a.png"] == 1  # valid: no second request
    assert server.hits["/p/b.png"] == 2  # broken: fetched again
    assert server.hits["/p/c.png"] == 2  # failed: retried
    assert (report.downloaded, report.already_there, report.failed) == (2, 1, 1)
    assert (out / "images" / "tt0000002.png").read_bytes() == files["b.png"]
    assert [r["id"] for r in read_csv(out / "labels.csv")] == [
        "tt0000001",
        "tt0000002",
        "tt0000003",
    ]
    assert list(failures_by_id(out)) == ["tt0000004"]


def _settle(server: PosterServer, quiet: float = 0.3, limit: float = 15.0) -> None:
    """Wait until the server handles nothing and its hit count has not moved for `quiet` s."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with server.lock:
            count, active = sum(server.hits.values()), server.active
        if count != last or active:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)


def _cli(labels: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "postergenre",
        "download",
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--rate",
        "0",
        "--timeout",
        "5",
    ]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_run_resumes_to_the_same_files_as_a_clean_run(server, tmp_path, stop):
    add_posters(server, tmp_path / "src", [f"{i}.png" for i in range(20)])
    server.delay = 0.06
    # the second half waits until the signal is sent: however slow the machine, the first run
    # cannot finish before it is interrupted
    server.gated = {f"{i}.png" for i in range(10, 20)}
    rows = [(str(100 + i), server.url(f"/p/{i}.png")) for i in range(20)]
    rows[5] = ("105", server.url("/status/404"))
    rows[9] = ("109", "")
    labels = url_list(tmp_path / "list.csv", rows)
    out, clean = tmp_path / "resumed", tmp_path / "clean"
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env["POSTERGENRE_PROGRESS_SECONDS"] = "0"

    process = subprocess.Popen(
        _cli(labels, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while len(list((out / "images").glob("*.png"))) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "no poster was downloaded"
        time.sleep(0.02)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=30)
    server.gate.set()
    _settle(server)  # requests the killed run sent must be counted before the resume's

    assert process.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL), stderr
    kept = sorted(p.stem for p in (out / "images").glob("tt*.png"))
    assert 3 <= len(kept) < 18
    if stop == signal.SIGINT:
        assert "run the same command again to resume" in stderr.strip().splitlines()[-1]
        assert [r["id"] for r in read_csv(out / "labels.csv")] == kept
        reasons = {r["reason"] for r in read_csv(out / "failures.csv")}
        assert "not attempted (interrupted)" in reasons
    else:
        (out / "images" / ".tt0000119.png.dead.tmp").write_bytes(b"half a poster")
    assert no_temporaries(out) == (stop == signal.SIGINT)
    requests_before = sum(server.hits.values())

    resumed = subprocess.run(_cli(labels, out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"already there {len(kept)}" in resumed.stderr
    assert "ETA" in resumed.stderr  # progress lines in a log
    assert sum(server.hits.values()) - requests_before == 20 - 1 - len(kept)  # no url: none

    assert main(_cli(labels, clean)[3:]) == 0
    assert files_under(out) == files_under(clean)
    assert no_temporaries(out)
    assert len(read_csv(out / "labels.csv")) == 18
    assert {r["reason"] for r in read_csv(out / "failures.csv")} == {"http 404", "no url"}


# -- the command line -----------------------------------------------------------------------


def test_cli_missing_labels_file_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["download", "--labels", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])

    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("postergenre download: error:") and "nope.csv" in line
    assert not (tmp_path / "o").exists()


def test_cli_names_the_flag_for_a_missing_url_column(tmp_path, capsys):
    labels = url_list(tmp_path / "list.csv", [("1", "x")], "id,link_to_art")

    assert main(["download", "--labels", str(labels), "--out", str(tmp_path / "o")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "no URL column" in line and "--url-column" in line


# -- rows that cannot be stored, pixels, and the rate over time -----------------------------


def test_an_id_no_file_can_be_named_after_is_a_failed_row_not_a_failed_run(server, tmp_path):
    add_posters(server, tmp_path / "src", ["a.png", "b.png"])
    long_id = "é" * 150  # 150 characters, 300 bytes: more than a file name may hold
    (tmp_path / "out" / "images" / "taken.png").mkdir(parents=True)  # a folder in the way
    rows = [
        ("1", "/p/a.png"),
        (long_id, "/p/b.png"),
        ("x" * 300, "/p/b.png"),
        ("sub/dir", "/p/b.png"),
        ("taken", "/p/a.png"),
        ("2", "/p/b.png"),
    ]
    for _ in range(2):  # a rerun finds the same rows, and fails the same ones the same way
        report, out = download(tmp_path, server, rows)

        assert (report.kept, report.failed) == (2, 4)
        assert [r["id"] for r in read_csv(out / "labels.csv")] == ["tt0000001", "tt0000002"]
        failures = failures_by_id(out)
        assert list(failures) == [long_id, "x" * 300, "sub/dir", "taken"]
        assert failures[long_id]["reason"] == "bad id: too long for a file name"
        assert failures["sub/dir"]["reason"] == "bad id: a path separator"
        assert failures["taken"]["reason"].startswith("cannot store the poster")
        assert sorted(p.name for p in (out / "images").iterdir()) == [
            "taken.png",
            "tt0000001.png",
            "tt0000002.png",
        ]
        assert no_temporaries(out)


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_lists(server, tmp_path, monkeypatch):
    import postergenre.data.download as download_module

    add_posters(server, tmp_path / "src", ["a.png"])

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(download_module, "write_bytes", full)
    with pytest.raises(DownloadFolderError, match="No space left on device") as raised:
        download(tmp_path, server, [("1", "/p/a.png")])
    assert "\n" not in str(raised.value)
    assert read_csv(tmp_path / "out" / "labels.csv") == []
    assert list(failures_by_id(tmp_path / "out")) == ["tt0000001"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_too_many_pixels_is_said_as_such_at_any_size(server, tmp_path):
    sizes = {"a": (8_000, 6_000), "b": (10_000, 10_000), "c": (20_000, 20_000)}
    for name, (width, height) in sizes.items():
        server.files[f"{name}.png"] = _png_header(width, height)
    rows = [(name, f"/p/{name}.png") for name in sizes]
    report, out = download(tmp_path, server, rows, max_pixels=40_000_000)

    failures = failures_by_id(out)
    assert (
        failures["a"]["reason"] == "too many pixels: 8000 x 6000, over the limit of 40 megapixels"
    )
    assert (
        failures["b"]["reason"] == "too many pixels: 10000 x 10000, over the limit of 40 megapixels"
    )
    assert failures["c"]["reason"].startswith("too many pixels: more than 179 megapixels")
    assert failures["c"]["reason"].endswith(", over the limit of 40 megapixels")
    assert report.failed == 3


def test_the_rate_holds_in_every_one_second_window(server, tmp_path, monkeypatch):
    import postergenre.data.poster_fetch as fetch_module

    add_posters(server, tmp_path / "src", ["a.png"])
    real_sleep = asyncio.sleep

    async def late_sleep(seconds: float) -> None:
        # a busy event loop wakes sleepers late: here the second sleeper, once
        await real_sleep(seconds + (0.4 if late_sleep.calls == 1 else 0.0))
        late_sleep.calls += 1

    late_sleep.calls = 0
    monkeypatch.setattr(fetch_module.asyncio, "sleep", late_sleep)
    rows = [(f"p{i}", "/p/a.png") for i in range(30)]
    download(tmp_path, server, rows, concurrency=8, rate=20)

    starts = sorted(server.times("/p/"))
    assert len(starts) == 30
    busiest = max(sum(1 for t in starts if first <= t < first + 1.0) for first in starts)
    assert busiest <= 20, busiest
