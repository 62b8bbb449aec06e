"""The jobs of ``imblab-scrape``: which URLs to fetch, and fetching, validating and filing them.

:func:`plan_jobs` turns a config into jobs, one per (class, URL): the URL lists first, then the
search results of the queries (:mod:`imblab.scrape.engines`). :func:`scrape_jobs` downloads them
in worker threads (:mod:`imblab.scrape.transport`); the bytes go to a temporary file, are
validated by :mod:`imblab.data.images` (full decode, decompression-bomb guard before decoding)
and only accepted, first-seen images are kept, as ``<root>/<class>/<sha256[:16]>.<real format's
extension>`` (names never come from the URL).

Every URL gets one row in ``<root>/manifest.csv`` (:data:`MANIFEST_COLUMNS`), written as it is
processed; a rerun skips the URLs (per class) the manifest already has, so an interrupted scrape
resumes where it stopped.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from omegaconf import DictConfig, OmegaConf

from imblab.data.images import FORMAT_EXTENSIONS, FORMAT_SUFFIXES, IMAGE_EXTENSIONS, validate_image
from imblab.errors import config_error
from imblab.scrape.engines import ENGINES, search_urls
from imblab.scrape.transport import DownloadError, DownloadPolicy, download

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
_TMP_DIR = ".imblab_scrape_tmp"


@dataclass(frozen=True)
class Job:
    """One candidate image: its class, URL and where the URL came from (a list file or a query).

    A lone surrogate in ``url`` (a search result's JSON can hold one) is kept as a ``\\udXXX``
    escape, so the URL's manifest row can be written and matched by a rerun."""

    cls: str
    url: str
    source: str

    def __post_init__(self) -> None:
        url = self.url.encode("utf-8", "backslashreplace").decode("utf-8")
        object.__setattr__(self, "url", url)


def read_url_list(path: str | Path, key: str = "url_lists") -> list[str]:
    """URLs of a UTF-8 text file (a leading byte-order mark is skipped), one a line (surrounding
    whitespace, blank lines and ``#`` comments skipped).

    A file that is not UTF-8 raises ConfigError (config key ``key``) naming the file and the line
    and column of its first undecodable byte: the whole list is refused rather than some of its
    lines skipped, since a list in another encoding is misread as a whole."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise config_error(
            key,
            str(path),
            f"not UTF-8: byte 0x{data[err.start]:02x} at line {line}, column {column}",
            "save the list as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)",
        ) from None
    lines = (line.strip() for line in text.splitlines())
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
    url_lists: dict[str, list[tuple[str, str]]] = {}  # class -> (config key, file)
    for cls, file in (cfg.url_lists or {}).items():
        key = f"url_lists.{cls}"
        if not Path(str(file)).is_file():
            raise config_error(key, str(file), "no such file", "give a text file of URLs")
        url_lists.setdefault(_check_class(str(cls), key), []).append((key, str(file)))
    if cfg.url_dir is not None:
        url_dir = Path(cfg.url_dir)
        if not url_dir.is_dir():
            raise config_error(
                "url_dir", str(url_dir), "not a folder", "give a folder of <class>.txt files"
            )
        for file in sorted(url_dir.glob("*.txt")):
            url_lists.setdefault(_check_class(file.stem, "url_dir"), []).append(
                ("url_dir", str(file))
            )
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
            job = Job(cls, url, source)
            if (cls, job.url) not in seen:
                seen.add((cls, job.url))
                jobs.append(job)

    for cls in sorted(set(url_lists) | set(queries)):
        for key, file in url_lists.get(cls, []):
            add(cls, read_url_list(file, key), f"list:{file}")
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
