"""``imblab-scrape``: build a class-per-folder image dataset from search queries and URL lists
(Hydra app on ``conf/scrape.yaml``).

Candidate URLs come from plain URL lists (one text file per class) and from search queries run
through an ``icrawler`` built-in crawler, whose own downloader is replaced by
:class:`UrlCollector`: icrawler fetches and parses the result pages, imblab downloads the images.
Every download is untrusted: only http(s) URLs, a byte cap (also on the decoded body), connect /
read / total timeouts, retries with exponential backoff on timeouts, connection errors, HTTP 429
and 5xx; the bytes go to a temporary file, are validated by :mod:`imblab.data.images` (full
decode, decompression-bomb guard before decoding) and only accepted, first-seen images are kept,
as ``<root>/<class>/<sha256[:16]>.<real format's extension>`` (names never come from the URL).

Every URL gets one row in ``<root>/manifest.csv`` (:data:`MANIFEST_COLUMNS`), written as it is
processed; a rerun skips the URLs (per class) the manifest already has, so an interrupted scrape
resumes where it stopped.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hydra
import requests
from icrawler import Downloader
from icrawler import builtin as icrawler_builtin
from omegaconf import DictConfig, OmegaConf

from imblab.data.images import FORMAT_EXTENSIONS, FORMAT_SUFFIXES, IMAGE_EXTENSIONS, validate_image
from imblab.errors import ConfigError, config_error

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "class",
    "url",
    "source",
    "file",
    "sha256",
    "width",
    "height",
    "format",
    "status",
    "reason",
)
# icrawler built-in crawler of each engine and the crawl() argument its query goes to
ENGINES = {
    "bing": ("BingImageCrawler", "keyword"),
    "google": ("GoogleImageCrawler", "keyword"),
    "baidu": ("BaiduImageCrawler", "keyword"),
    "flickr": ("FlickrImageCrawler", "text"),
    "greedy": ("GreedyImageCrawler", "domains"),
}
# the loggers of icrawler's crawler and of its feeder, parser and downloader thread pools
_ICRAWLER_LOGGERS = ("icrawler", "feeder", "parser", "downloader")
_TMP_DIR = ".imblab_scrape_tmp"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits of one download: ``max_bytes`` of body (after content decoding), seconds to
    connect / between received bytes / for the whole download, ``retries`` after the first try
    with ``backoff * 2**k`` seconds before retry k, and the User-Agent sent."""

    max_bytes: int = 20 * 2**20
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    user_agent: str = "imblab-scrape/0.1 (+https://github.com/imblab)"


class DownloadError(Exception):
    """A download failed; ``transient`` failures (timeouts, connection errors, HTTP 429 / 5xx)
    are retried, the others are final."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def url_problem(url: str) -> str | None:
    """Why ``url`` is not downloaded (not http(s), no host), or None if it may be."""
    try:
        parts = urlsplit(url)
    except ValueError as err:
        return f"malformed URL: {err}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL (scheme {parts.scheme or 'missing'!r})"
    if not parts.hostname:
        return "URL without a host"
    return None


def _fetch_once(session: requests.Session, url: str, dest: Path, policy: DownloadPolicy) -> None:
    """One GET of ``url`` streamed into ``dest`` under the policy's limits; raises DownloadError."""
    deadline = time.monotonic() + policy.total_timeout
    try:
        with session.get(
            url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)
        ) as resp:
            code = resp.status_code
            if code == 429 or code >= 500:
                raise DownloadError(f"HTTP {code}", transient=True)
            if code != 200:
                raise DownloadError(f"HTTP {code}", transient=False)
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > policy.max_bytes:
                raise DownloadError(
                    f"too large: Content-Length {length} > max_bytes={policy.max_bytes}",
                    transient=False,
                )
            size = 0
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise DownloadError(
                            f"too large: more than max_bytes={policy.max_bytes} bytes",
                            transient=False,
                        )
                    if time.monotonic() > deadline:
                        raise DownloadError(
                            f"timeout: longer than total_timeout={policy.total_timeout}s",
                            transient=True,
                        )
                    fh.write(chunk)
    except (requests.Timeout, requests.ConnectionError) as err:
        kind = "timeout" if isinstance(err, requests.Timeout) else "connection error"
        raise DownloadError(f"{kind}: {type(err).__name__}", transient=True) from None
    except requests.exceptions.ChunkedEncodingError as err:
        raise DownloadError(f"broken transfer: {type(err).__name__}", transient=True) from None
    except requests.RequestException as err:  # invalid URL, redirect loop or to a non-http URL
        raise DownloadError(
            f"request failed: {type(err).__name__}: {err}", transient=False
        ) from None


def download(session: requests.Session, url: str, dest: Path, policy: DownloadPolicy) -> int:
    """Download ``url`` into ``dest`` (retrying transient failures with exponential backoff);
    return the number of attempts it took. Raises DownloadError with the last reason."""
    problem = url_problem(url)
    if problem is not None:
        raise DownloadError(problem, transient=False)
    attempt = 0
    while True:
        attempt += 1
        try:
            _fetch_once(session, url, dest, policy)
            return attempt
        except DownloadError as err:
            if err.transient and attempt > policy.retries:
                err.reason += f" (after {attempt} attempts)"
            if not err.transient or attempt > policy.retries:
                raise
        time.sleep(policy.backoff * 2 ** (attempt - 1))


class UrlCollector(Downloader):
    """icrawler downloader that downloads nothing: it records the image URLs the crawler's parser
    finds (in order, each once) and stops the crawl at ``max_num`` of them; imblab's own
    downloader fetches them afterwards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.urls: list[str] = []
        self._seen: set[str] = set()

    def download(self, task: dict, default_ext: str, timeout: float = 5, **kwargs: Any) -> bool:
        """Record ``task["file_url"]`` (no network access)."""
        url = task.get("file_url")
        with self.lock:
            if not isinstance(url, str) or url in self._seen or self.reach_max_num():
                return False
            self._seen.add(url)
            self.urls.append(url)
            self.fetched_num += 1
            if self.reach_max_num():
                self.signal.set(reach_max_num=True)
        return True

    def worker_exec(
        self, max_num: int, default_ext: str = "", queue_timeout: float = 1, **kwargs: Any
    ) -> None:
        """icrawler's loop with a 1 s queue wait (nothing slow happens here)."""
        super().worker_exec(max_num, default_ext, queue_timeout, **kwargs)


def search_urls(
    engine: str,
    query: str,
    max_num: int,
    crawler_kwargs: dict[str, Any] | None = None,
    crawl_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Up to ``max_num`` image URLs for ``query`` from an icrawler built-in crawler
    (:data:`ENGINES`), in the order its parser found them."""
    cls_name, query_arg = ENGINES[engine]
    for name in _ICRAWLER_LOGGERS:  # its threads log every step at INFO; keep its errors
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as unused_storage:
        try:
            crawler = getattr(icrawler_builtin, cls_name)(
                downloader_cls=UrlCollector,
                storage={"backend": "FileSystem", "root_dir": unused_storage},
                log_level=logging.WARNING,  # for its basicConfig where logging is unset
                **(crawler_kwargs or {}),
            )
        except RuntimeError as err:  # flickr without an API key
            raise config_error(
                "search.engine", engine, str(err), "set search.crawler_kwargs.apikey=KEY"
            ) from None
        crawler.crawl(**{query_arg: query, "max_num": max_num, **(crawl_kwargs or {})})
        return list(crawler.downloader.urls)


@dataclass(frozen=True)
class Job:
    """One candidate image: its class, URL and where the URL came from (a list file or a query)."""

    cls: str
    url: str
    source: str


def read_url_list(path: str | Path) -> list[str]:
    """URLs of a text file, one a line (surrounding whitespace, blank lines and ``#`` comments
    skipped)."""
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of a manifest (empty if there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _check_class(name: str, key: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name != name.strip():
        raise config_error(
            key,
            name,
            "not a usable folder name",
            "use a plain name such as 'cat' or 'healthy_leaf'",
        )
    return name


def _as_list(queries: Any) -> list[str]:
    """A class's queries: a list, or one query given as a string, or none."""
    if queries is None:
        return []
    return [str(queries)] if isinstance(queries, str) else [str(q) for q in queries]


def plan_jobs(cfg: DictConfig) -> list[Job]:
    """Every (class, URL, source) of the config: URL lists (``url_lists``, ``url_dir``) first,
    then search results of ``queries``, classes in sorted order; a URL appears once per class."""
    url_lists: dict[str, list[str]] = {}
    for cls, file in (cfg.url_lists or {}).items():
        if not Path(str(file)).is_file():
            raise config_error(
                f"url_lists.{cls}", str(file), "no such file", "give a text file of URLs"
            )
        url_lists.setdefault(_check_class(str(cls), f"url_lists.{cls}"), []).append(str(file))
    if cfg.url_dir is not None:
        url_dir = Path(cfg.url_dir)
        if not url_dir.is_dir():
            raise config_error(
                "url_dir", str(url_dir), "not a folder", "give a folder of <class>.txt files"
            )
        for file in sorted(url_dir.glob("*.txt")):
            url_lists.setdefault(_check_class(file.stem, "url_dir"), []).append(str(file))
    queries = {
        _check_class(str(cls), f"queries.{cls}"): _as_list(qs)
        for cls, qs in (cfg.queries or {}).items()
    }
    if not url_lists and not any(queries.values()):
        raise config_error(
            "queries",
            {},
            "no classes: give search queries or URL lists",
            "e.g. '+queries.cat=[tabby cat]' '+url_lists.dog=dogs.txt' or url_dir=DIR",
        )
    engine = str(cfg.search.engine)
    if queries and engine not in ENGINES:
        raise config_error(
            "search.engine", engine, "unknown engine", f"use one of {sorted(ENGINES)}"
        )
    if int(cfg.search.max_per_query) < 1:
        raise config_error(
            "search.max_per_query", cfg.search.max_per_query, "must be >= 1", "e.g. 100"
        )
    jobs: list[Job] = []
    seen: set[tuple[str, str]] = set()

    def add(cls: str, urls: Iterable[str], source: str) -> None:
        for url in urls:
            if (cls, url) not in seen:
                seen.add((cls, url))
                jobs.append(Job(cls, url, source))

    for cls in sorted(set(url_lists) | set(queries)):
        for file in url_lists.get(cls, []):
            add(cls, read_url_list(file), f"list:{file}")
        for query in queries.get(cls, []):
            found = search_urls(
                engine,
                query,
                int(cfg.search.max_per_query),
                OmegaConf.to_container(cfg.search.crawler_kwargs),  # type: ignore[arg-type]
                OmegaConf.to_container(cfg.search.crawl_kwargs),  # type: ignore[arg-type]
            )
            log.info("%s: %d image URLs for %s query %r", cls, len(found), engine, query)
            if not found:
                log.warning(
                    "%s query %r gave no image URLs: offline, blocked, or the engine's result "
                    "page changed (icrawler's log above says which)",
                    engine,
                    query,
                )
            add(cls, found, f"{engine}:{query}")
    return jobs


@dataclass(frozen=True)
class _Fetched:
    job: Job
    tmp: Path | None
    row: dict[str, str]


def _fetch_and_validate(
    job: Job, tmp_dir: Path, policy: DownloadPolicy, min_side: int, max_pixels: int
) -> _Fetched:
    """Download one job into a temporary file and validate it (runs in a worker thread)."""
    session = _session(policy)
    tmp = tmp_dir / uuid.uuid4().hex  # no suffix: validation reports the real format
    row = {"class": job.cls, "url": job.url, "source": job.source}
    try:
        attempts = download(session, job.url, tmp, policy)
    except DownloadError as err:
        tmp.unlink(missing_ok=True)
        return _Fetched(job, None, {**row, "status": "failed", "reason": err.reason})
    verdict = validate_image(tmp, min_side=min_side, max_pixels=max_pixels)
    notes = [f"downloaded after {attempts} attempts"] if attempts > 1 else []
    suffix = Path(urlsplit(job.url).path).suffix.lower()
    if (
        verdict.format
        and suffix in IMAGE_EXTENSIONS
        and suffix not in FORMAT_SUFFIXES[verdict.format]
    ):
        notes.append(f"{verdict.format} data behind a {suffix} URL")
    row |= {
        "sha256": verdict.sha256,
        "width": str(verdict.width),
        "height": str(verdict.height),
        "format": verdict.format,
        "status": verdict.status,
        "reason": "; ".join([*notes, verdict.reason] if verdict.reason else notes),
    }
    if not verdict.ok:
        tmp.unlink(missing_ok=True)
        return _Fetched(job, None, row)
    return _Fetched(job, tmp, row)


_local = threading.local()


def _session(policy: DownloadPolicy) -> requests.Session:
    """One requests session per worker thread (connection reuse; sessions are not thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.max_redirects = 5
        _local.session = session
    session.headers["User-Agent"] = policy.user_agent
    return session


class Manifest:
    """``manifest.csv`` of a dataset folder: the rows so far, appended to as URLs are processed."""

    def __init__(self, root: Path) -> None:
        self.path = root / MANIFEST_NAME
        self.rows = read_manifest(self.path)
        new = not self.path.is_file()
        self._fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._fh, fieldnames=MANIFEST_COLUMNS, restval="")
        if new:
            self._writer.writeheader()

    def append(self, row: dict[str, str]) -> None:
        self._writer.writerow(row)
        self._fh.flush()
        self.rows.append(row)

    def close(self) -> None:
        self._fh.close()


def _done(rows: Iterable[dict[str, str]], root: Path, retry_failed: bool) -> set[tuple[str, str]]:
    """(class, URL) pairs a rerun skips: every row's, except failed ones with ``retry_failed``
    and accepted ones whose file is gone."""
    done = set()
    for row in rows:
        if row["status"] == "failed" and retry_failed:
            continue
        if row["status"] == "ok" and not (root / row["file"]).is_file():
            continue
        done.add((row["class"], row["url"]))
    return done


def scrape_jobs(
    jobs: list[Job],
    root: Path,
    *,
    policy: DownloadPolicy,
    workers: int = 4,
    min_side: int = 16,
    max_pixels: int = 89_478_485,
    retry_failed: bool = False,
) -> Counter[str]:
    """Download, validate and file every job not yet in ``root``'s manifest; returns the count of
    each status of this run's rows. Rows are written in job order; of byte-identical images
    (across classes too, and with earlier runs) the first is kept, the others are "duplicate"."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root)
    done = _done(manifest.rows, root, retry_failed)
    kept = {
        r["sha256"]: r["file"]
        for r in manifest.rows
        if r["status"] == "ok" and (root / r["file"]).is_file()
    }
    todo = [j for j in jobs if (j.cls, j.url) not in done]
    log.info(
        "%d URLs, %d already in %s, %d to fetch",
        len(jobs),
        len(jobs) - len(todo),
        manifest.path,
        len(todo),
    )
    tmp_dir = root / _TMP_DIR
    tmp_dir.mkdir(exist_ok=True)
    counts: Counter[str] = Counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results: Iterator[_Fetched] = pool.map(
                lambda j: _fetch_and_validate(j, tmp_dir, policy, min_side, max_pixels), todo
            )
            for res in results:
                row = res.row
                if res.tmp is not None:
                    sha = row["sha256"]
                    if sha in kept:
                        res.tmp.unlink()
                        row |= {"status": "duplicate", "reason": f"duplicate of {kept[sha]}"}
                    else:
                        rel = f"{res.job.cls}/{sha[:16]}{FORMAT_EXTENSIONS[row['format']]}"
                        (root / res.job.cls).mkdir(exist_ok=True)
                        os.replace(res.tmp, root / rel)
                        kept[sha] = rel
                        row["file"] = rel
                counts[row["status"]] += 1
                manifest.append(row)
                if row["status"] != "ok":
                    log.info("%s %s: %s %s", row["class"], row["url"], row["status"], row["reason"])
    finally:
        manifest.close()
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    return counts


def policy_from(cfg: DictConfig) -> DownloadPolicy:
    """The download policy of ``cfg.download``, each value checked."""
    d = cfg.download
    for key in ("max_bytes", "connect_timeout", "read_timeout", "total_timeout"):
        if not float(d[key]) > 0:
            raise config_error(f"download.{key}", d[key], "must be > 0", "give a positive number")
    for key in ("retries", "backoff"):
        if float(d[key]) < 0:
            raise config_error(f"download.{key}", d[key], "must be >= 0", "use 0 for none")
    return DownloadPolicy(
        max_bytes=int(d.max_bytes),
        connect_timeout=float(d.connect_timeout),
        read_timeout=float(d.read_timeout),
        total_timeout=float(d.total_timeout),
        retries=int(d.retries),
        backoff=float(d.backoff),
        user_agent=str(d.user_agent),
    )


def scrape(cfg: DictConfig) -> Counter[str]:
    """Run the scrape of a composed ``scrape.yaml`` config; returns this run's status counts."""
    policy = policy_from(cfg)
    for key in ("download.workers", "validate.min_side", "validate.max_pixels"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise config_error(key, value, "must be an integer >= 1", "see conf/scrape.yaml")
    jobs = plan_jobs(cfg)
    root = Path(cfg.root)
    counts = scrape_jobs(
        jobs,
        root,
        policy=policy,
        workers=int(cfg.download.workers),
        min_side=int(cfg.validate.min_side),
        max_pixels=int(cfg.validate.max_pixels),
        retry_failed=bool(cfg.download.retry_failed),
    )
    per_class = Counter(
        r["class"] for r in read_manifest(root / MANIFEST_NAME) if r["status"] == "ok"
    )
    log.info(
        "this run: %s; dataset %s now has %s accepted images %s; manifest %s",
        dict(sorted(counts.items())) or "nothing new",
        root,
        sum(per_class.values()),
        dict(sorted(per_class.items())),
        root / MANIFEST_NAME,
    )
    return counts


@hydra.main(version_base="1.3", config_path="pkg://imblab.conf", config_name="scrape")
def main(cfg: DictConfig) -> None:
    """Scrape; a wrong config value exits with code 2 and a one-line message."""
    try:
        scrape(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
