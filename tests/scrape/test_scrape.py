"""``imblab-scrape`` against a local HTTP server serving good, bad and misbehaving files."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from icrawler.builtin import bing

from imblab.data.images import load_rgb, validate_folder
from imblab.errors import ConfigError
from imblab.scrape.cli import scrape
from imblab.scrape.engines import search_urls
from imblab.scrape.jobs import MANIFEST_COLUMNS, read_manifest
from imblab.scrape.transport import DownloadError, DownloadPolicy, download
from tests.conftest import Compose
from tests.scrape.badfiles import MARKER, UPRIGHT_SIZE, image_cases
from tests.scrape.cli import run_cli
from tests.scrape.server import BIG_BYTES, Site, serve

FAST = [
    "download.max_bytes=100000",
    "download.read_timeout=0.5",
    "download.total_timeout=5",
    "download.retries=1",
    "download.backoff=0.01",
    "download.workers=4",
]


@pytest.fixture
def site() -> Iterator[Site]:
    with serve() as s:
        yield s


def expected_rows(site: Site) -> dict[tuple[str, str], tuple[str, str]]:
    """(class, URL) -> (status, reason substring) for every URL of the cat and dog lists."""
    want = {}
    for kind, case in image_cases().items():
        reason = case.reason.replace("behind a .jpg name", "behind a .jpg URL")
        want["cat", site.url(f"/files/{kind}/{case.filename}")] = (case.status, reason)
    for path, status, reason in [
        ("/flaky.jpg", "ok", "downloaded after 2 attempts"),
        ("/always500.jpg", "failed", "HTTP 503 (after 2 attempts)"),
        ("/missing.jpg", "failed", "HTTP 404"),
        ("/slow.jpg", "failed", "timeout"),
        ("/big.jpg", "failed", "too large: Content-Length 300000 > max_bytes=100000"),
        ("/big_nolength.jpg", "failed", "too large: more than max_bytes=100000"),
        ("/gzip_bomb.jpg", "failed", "too large: more than max_bytes=100000"),
        ("/redirect-to-file", "failed", "request failed: InvalidSchema"),
        ("/files/..%2F..%2F..%2Fescape.jpg", "ok", ""),
    ]:
        want["cat", site.url(path)] = (status, reason)
    for url in ["ftp://127.0.0.1/x.jpg", "file:///etc/passwd", "javascript:alert(1)"]:
        want["cat", url] = ("failed", "not an http(s) URL")
    for i in range(3):
        want["dog", site.url(f"/dog/{i}.jpg")] = ("ok", "")
    want["dog", site.url("/dup/copy.jpg")] = ("duplicate", "duplicate of cat/")
    return want


def write_lists(site: Site, folder: Path) -> dict[tuple[str, str], tuple[str, str]]:
    want = expected_rows(site)
    folder.mkdir()
    for cls in ("cat", "dog"):
        urls = [url for c, url in want if c == cls]
        (folder / f"{cls}.txt").write_text("# " + cls + "\n\n" + "\n".join(urls) + "\n")
    return want


def test_scrape_reports_every_kind_and_keeps_only_valid_images(
    site: Site, tmp_path: Path, compose_cfg: Compose
) -> None:
    want = write_lists(site, tmp_path / "lists")
    root = tmp_path / "ds"
    cfg = compose_cfg(f"root={root}", f"url_dir={tmp_path / 'lists'}", *FAST, config_name="scrape")
    counts = scrape(cfg)
    rows = read_manifest(root / "manifest.csv")
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    got = {(r["class"], r["url"]): r for r in rows}
    assert len(rows) == len(got) == len(want)
    for key, (status, reason) in want.items():
        assert got[key]["status"] == status, (key, got[key])
        assert reason in got[key]["reason"], (key, got[key])
    assert counts == Counter(status for status, _ in want.values())
    ok = [r for r in rows if r["status"] == "ok"]
    # files: named <class>/<sha256[:16]>.<real format's extension>, only accepted ones, in root
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {r["file"] for r in ok} | {"manifest.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "lists"]  # nothing escaped
    for r in ok:
        cls, name = r["file"].split("/")
        assert cls == r["class"] and name.startswith(r["sha256"][:16])
    for r in rows:
        if r["status"] != "ok":
            assert r["file"] == ""
    webp = got["cat", site.url("/files/webp_as_jpg/webp.jpg")]
    assert webp["format"] == "WEBP" and webp["file"].endswith(".webp")
    tiny = got["cat", site.url("/files/tiny/tiny.png")]
    assert (tiny["width"], tiny["height"]) == ("8", "8")
    # every kept file is valid and loads as RGB, EXIF rotation applied
    accepted, rejected = validate_folder(root, cache=False)
    assert rejected == [] and len(accepted) == len(ok)
    rotated = np.asarray(
        load_rgb(root / got["cat", site.url("/files/exif_rotated/rotated.jpg")]["file"])
    )
    assert rotated.shape[:2] == UPRIGHT_SIZE[::-1]
    assert np.abs(rotated[2, 2].astype(int) - MARKER).max() < 40
    # a rerun fetches nothing (every URL is in the manifest)
    hits = sum(site.hits.values())
    assert scrape(cfg) == {}
    assert sum(site.hits.values()) == hits
    assert len(read_manifest(root / "manifest.csv")) == len(rows)


def test_rerun_resumes_and_retries_failures_on_request(
    site: Site, tmp_path: Path, compose_cfg: Compose
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "cat.txt").write_text(f"{site.url('/dog/0.jpg')}\n{site.url('/missing.jpg')}\n")
    root = tmp_path / "ds"
    args = [f"root={root}", f"+url_lists.cat={lists / 'cat.txt'}", *FAST]
    assert scrape(compose_cfg(*args, config_name="scrape")) == {"ok": 1, "failed": 1}
    (lists / "cat.txt").write_text(
        f"{site.url('/dog/0.jpg')}\n{site.url('/missing.jpg')}\n{site.url('/dog/1.jpg')}\n"
    )
    assert scrape(compose_cfg(*args, config_name="scrape")) == {"ok": 1}
    assert site.hits["/dog/0.jpg"] == 1 and site.hits["/missing.jpg"] == 1
    # a deleted accepted file is fetched again; failed URLs only with retry_failed
    kept = root / read_manifest(root / "manifest.csv")[0]["file"]
    kept.unlink()
    cfg = compose_cfg(*args, "download.retry_failed=true", config_name="scrape")
    assert scrape(cfg) == {"ok": 1, "failed": 1}
    assert kept.is_file() and site.hits["/dog/0.jpg"] == 2 and site.hits["/missing.jpg"] == 2


def test_download_limits(site: Site, tmp_path: Path) -> None:
    policy = DownloadPolicy(read_timeout=1, total_timeout=0.3, retries=0)
    with pytest.raises(DownloadError, match=r"longer than total_timeout=0\.3s") as err:
        download(requests.Session(), site.url("/trickle.jpg"), tmp_path / "t", policy)
    assert err.value.transient
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(requests.Session(), site.url("/nothing"), tmp_path / "t", policy)
    assert not err.value.transient
    policy = DownloadPolicy(max_bytes=BIG_BYTES)
    assert download(requests.Session(), site.url("/big_nolength.jpg"), tmp_path / "b", policy) == 1
    assert (tmp_path / "b").stat().st_size == BIG_BYTES


def test_greedy_crawler_collects_urls_from_the_local_site(
    site: Site, tmp_path: Path, compose_cfg: Compose
) -> None:
    urls = search_urls("greedy", site.url("/index.html"), max_num=3)
    assert sorted(urls) == sorted(site.url(f"/dog/{i}.jpg") for i in range(3))
    assert not any(p.startswith("/dog/") for p in site.hits)  # the crawler downloaded nothing
    root = tmp_path / "ds"
    cfg = compose_cfg(
        f"root={root}",
        "search.engine=greedy",
        "search.max_per_query=2",
        f'+queries.dog="{site.url("/index.html")}"',  # one query given as a string
        *FAST,
        config_name="scrape",
    )
    assert scrape(cfg) == {"ok": 2}
    rows = read_manifest(root / "manifest.csv")
    assert {r["source"] for r in rows} == {f"greedy:{site.url('/index.html')}"}


def test_bing_parser_feeds_the_safe_downloader(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def local_feed(self: bing.BingFeeder, keyword: str, offset: int, max_num: int, filters=None):  # type: ignore[no-untyped-def]
        self.out_queue.put(site.url(f"/bing.html?q={keyword}"))

    monkeypatch.setattr(bing.BingFeeder, "feed", local_feed)
    urls = search_urls("bing", "cats", max_num=2)
    assert urls == [site.url(f"/dog/{i}.jpg") for i in range(2)]
    assert site.hits["/bing.html?q=cats"] == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "queries={}: no classes"),
        (["+url_lists.cat=/no/such.txt"], "url_lists.cat='/no/such.txt': no such file"),
        (["+queries.cat=[x]", "search.engine=altavista"], "search.engine='altavista': unknown"),
        (["+queries.cat=[x]", "download.max_bytes=0"], "download.max_bytes=0: must be > 0"),
        (["+queries.cat=[x]", "validate.min_side=0"], "validate.min_side=0: must be an integer"),
    ],
)
def test_config_errors(
    overrides: list[str], message: str, compose_cfg: Compose, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        scrape(compose_cfg(f"root={tmp_path}", *overrides, config_name="scrape"))


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", " cat"])
def test_class_names_must_be_plain_folder_names(
    name: str, compose_cfg: Compose, tmp_path: Path
) -> None:
    cfg = compose_cfg(f"root={tmp_path}", config_name="scrape")
    cfg.queries = {name: ["q"]}
    with pytest.raises(ConfigError, match="not a usable folder name"):
        scrape(cfg)


def test_cli_builds_the_dataset(site: Site, tmp_path: Path) -> None:
    (tmp_path / "cat.txt").write_text(site.url("/dog/2.jpg") + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.scrape",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"root={tmp_path / 'ds'}",
            f"+url_lists.cat={tmp_path / 'cat.txt'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["status"] for r in read_manifest(tmp_path / "ds" / "manifest.csv")] == ["ok"]
    assert "1 accepted images {'cat': 1}" in (tmp_path / "run" / "scrape.log").read_text()


def test_cli_config_error_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["imblab-scrape", f"hydra.run.dir={tmp_path / 'run'}", f"root={tmp_path / 'ds'}"]
    assert run_cli(argv[1:], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: queries={}: no classes: give search queries or URL lists;")
