"""``imblab-scrape``: build a class-per-folder image dataset from search queries and URL lists
(Hydra app on ``conf/scrape.yaml``).

Candidate URLs come from plain URL lists (one text file per class) and from search queries run
through an ``icrawler`` built-in crawler, whose own downloader is replaced by
:class:`UrlCollector`: icrawler fetches and parses the result pages, imblab downloads the images.
Every download is untrusted: only http(s) URLs (malformed ones are reported, never raised), a
byte cap (also on the decoded body), connect / read / total timeouts (the total one enforced by a
watchdog that shuts the sockets down), retries with exponential backoff on timeouts, connection
errors, HTTP 429 and 5xx, redirects followed by hand under an SSRF rule checked on the resolved
address at connect time (:class:`_Download`); the bytes go to a temporary file, are validated by
:mod:`imblab.data.images` (full decode, decompression-bomb guard before decoding) and only
accepted, first-seen images are kept, as ``<root>/<class>/<sha256[:16]>.<real format's
extension>`` (names never come from the URL).

Every URL gets one row in ``<root>/manifest.csv`` (:data:`MANIFEST_COLUMNS`), written as it is
processed; a rerun skips the URLs (per class) the manifest already has, so an interrupted scrape
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import hydra
import requests
import urllib3
from icrawler import Downloader
from icrawler import builtin as icrawler_builtin
from omegaconf import DictConfig, OmegaConf
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from urllib3 import HTTPConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family, create_connection

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


class _Refused(Exception):
    """A connection the SSRF rule forbids (deliberately no OSError: urllib3 must not retry it)."""


def _url_error(url: str) -> requests.RequestException | None:
    """Why ``url`` cannot be fetched, as the requests exception it would raise (InvalidSchema or
    InvalidURL), or None. Catches every malformed URL before the network: what urlsplit,
    requests' preparation and urllib3's connection would raise (bad port, IPv6 brackets, IDNA,
    an empty host label or one over 63 characters)."""
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            return requests.exceptions.InvalidSchema(
                f"not an http(s) URL (scheme {parts.scheme or 'missing'!r})"
            )
        if not parts.hostname:
            return requests.exceptions.InvalidURL("URL without a host")
        host = parse_url(str(requests.Request("GET", url).prepare().url)).host or ""
    except (LocationValueError, requests.RequestException, ValueError) as err:  # UnicodeError too
        return requests.exceptions.InvalidURL(f"malformed URL: {type(err).__name__}: {err}")
    try:
        if not host.startswith("["):
            host.encode("idna")  # what urllib3 checks at connect time (LocationParseError)
    except UnicodeError:
        return requests.exceptions.InvalidURL(
            f"malformed URL: host {host!r} has an empty label or one over 63 characters"
        )
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not downloaded (not http(s), no host, malformed), or None if it may be."""
    err = _url_error(url)
    return None if err is None else str(err)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_kind(ip: str) -> str | None:
    """What keeps ``ip`` from being a public address ("loopback", "unspecified", "link-local",
    "multicast", "reserved", "private", "non-global"), or None for a public one. An IPv4 address
    inside an IPv6 one (IPv4-mapped, 6to4, NAT64) is judged as that IPv4 address too."""
    addr = ipaddress.ip_address(ip.split("%")[0])  # an IPv6 zone ("%eth0") is no part of it
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and addr in _NAT64:
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None and (kind := address_kind(str(inner))) is not None:
            return kind
    for kind, flag in (
        ("loopback", addr.is_loopback),
        ("unspecified", addr.is_unspecified),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("reserved", addr.is_reserved),
        ("private", addr.is_private),
        ("non-global", not addr.is_global),  # e.g. 100.64.0.0/10, shared address space
    ):
        if flag:
            return kind
    return None


class _Download:
    """What the connections of one download share: the SSRF rule's state and the
    ``total_timeout`` watchdog.

    SSRF rule: the first resolution of the download (its URL's host) decides. If it gives a
    public address, every connection of the download (redirect hops, retries, any later DNS
    answer) goes to public addresses only: the others are dropped, and a host with no public
    address is refused. A URL whose host is itself loopback or private is fetched as given,
    redirects included. The addresses are checked as resolved for the connect, so no second
    lookup can differ from the one checked.

    Watchdog: at the deadline every socket of the download is shut down, so no read, however
    slow its bytes arrive (body, headers, chunk sizes, compressed stream), outlives it; reads
    then end with whatever error the shutdown causes and :attr:`expired` says why."""

    def __init__(self, total_timeout: float) -> None:
        self.deadline = time.monotonic() + total_timeout
        self.public: bool | None = None  # set by the first resolution
        self._fired = False
        self._socks: list[socket.socket] = []  # duplicates: shutdown acts on the connection
        self._lock = threading.Lock()
        self._timer = threading.Timer(total_timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._fired or time.monotonic() >= self.deadline

    def admit(self, host: str, ips: list[str]) -> list[str]:
        """The addresses of ``host`` the rule lets the download connect to (in order); raises
        _Refused if none."""
        kinds = {ip: address_kind(ip) for ip in ips}
        public = [ip for ip in ips if kinds[ip] is None]
        if self.public is None:
            self.public = bool(public)
        if self.public and ips and not public:
            ip = ips[0]
            raise _Refused(
                f"SSRF rule: {host} resolves to {ip}, a {kinds[ip]} address; a public URL is "
                "never followed (by a redirect or a new DNS answer) to a non-public address"
            )
        return public if self.public else ips

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock``'s connection down at the deadline (now, if it has passed)."""
        dup = sock.dup()
        with self._lock:
            self._socks.append(dup)
            if self.expired:
                _shutdown(dup)

    def _expire(self) -> None:
        with self._lock:
            self._fired = True
            for sock in self._socks:
                _shutdown(sock)

    def close(self) -> None:
        """Stop the watchdog and release the duplicated sockets."""
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)


class _GuardedHTTPConnection(HTTPConnection):
    """urllib3 connection that resolves its host itself, connects only to the addresses the
    download's SSRF rule admits, and puts the socket under the download's watchdog."""

    def __init__(self, *args: Any, download: _Download, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._download = download

    def _new_conn(self) -> socket.socket:
        host = self.host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as gai:
            raise NameResolutionError(self.host, self, gai) from gai
        ips = self._download.admit(self.host, list(dict.fromkeys(str(i[4][0]) for i in infos)))
        last: OSError = OSError(f"no address of {self.host} could be tried")
        for ip in ips:
            remaining = self._download.deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = self.timeout
            if isinstance(timeout, int | float):  # no connect outlives the deadline either
                timeout = min(timeout, remaining)
            try:
                sock = create_connection(
                    (ip, self.port),
                    timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as err:  # next address, as socket.create_connection does
                last = err
                continue
            try:
                self._download.watch(sock)
            except OSError:  # no file descriptor left for the duplicate
                sock.close()
                raise
            return sock
        if isinstance(last, TimeoutError):
            raise ConnectTimeoutError(self, f"connect timeout={self.timeout}") from last
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}") from last


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """:class:`_GuardedHTTPConnection` with TLS (certificate checked against the URL's host)."""


class _GuardedPoolManager(PoolManager):
    """PoolManager whose pools make guarded connections of one download."""

    def __init__(self, download: _Download, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._download = download

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = (
            _GuardedHTTPSConnection if scheme == "https" else _GuardedHTTPConnection
        )
        pool.conn_kw["download"] = self._download
        return pool


class _GuardedAdapter(HTTPAdapter):
    """requests transport of one download: guarded connections, no retries of its own."""

    def __init__(self, download: _Download) -> None:
        self._download = download
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self.poolmanager = _GuardedPoolManager(
            self._download, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


def _check_length(value: str | None, max_bytes: int) -> None:
    """Raise DownloadError for a Content-Length that is not a decimal number of bytes (repeats of
    one value allowed, as RFC 9110 does) or is above ``max_bytes``."""
    if value is None:
        return
    values = {v.strip() for v in value.split(",")}
    length = values.pop() if len(values) == 1 else ""
    if not (length.isascii() and length.isdigit()):
        raise DownloadError(f"bad Content-Length header: {value!r}", transient=False)
    if int(length) > max_bytes:
        raise DownloadError(
            f"too large: Content-Length {length} > max_bytes={max_bytes}", transient=False
        )


def _get(
    session: requests.Session,
    adapter: HTTPAdapter,
    url: str,
    dest: Path,
    policy: DownloadPolicy,
    download: _Download,
) -> None:
    """GET ``url`` into ``dest``, following up to ``session.max_redirects`` redirects (each
    target checked as the URL was); raises DownloadError or the transport's exceptions."""
    env = session.merge_environment_settings(url, {}, None, None, None)  # CA bundle; no proxies
    for _ in range(session.max_redirects + 1):
        request = session.prepare_request(requests.Request("GET", url))
        resp = adapter.send(
            request,
            stream=True,
            timeout=(policy.connect_timeout, policy.read_timeout),
            verify=env["verify"],
            cert=env["cert"],
        )
        with resp:
            extract_cookies_to_jar(session.cookies, request, resp.raw)
            target = session.get_redirect_target(resp)
            if target is not None:
                try:
                    url = urljoin(resp.url, target)
                except ValueError:  # a malformed target: _url_error says why
                    url = target
                err = _url_error(url)
                if err is not None:
                    raise DownloadError(
                        f"request failed: {type(err).__name__}: redirect to {url!r}: {err}",
                        transient=False,
                    )
                continue
            code = resp.status_code
            if code == 429 or code >= 500:
                raise DownloadError(f"HTTP {code}", transient=True)
            if code != 200:
                raise DownloadError(f"HTTP {code}", transient=False)
            _check_length(resp.headers.get("Content-Length"), policy.max_bytes)
            size = 0
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise DownloadError(
                            f"too large: more than max_bytes={policy.max_bytes} bytes",
                            transient=False,
                        )
                    if download.expired:
                        break
                    fh.write(chunk)
            return
    raise DownloadError(f"too many redirects (more than {session.max_redirects})", transient=False)


def _innermost(err: BaseException) -> BaseException:
    """The cause inside requests' and urllib3's wrappers (MaxRetryError's reason, the error a
    ConnectionError or ProtocolError carries)."""
    while True:
        inner = getattr(err, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in reversed(err.args) if isinstance(a, BaseException)), None)
        if inner is None or inner is err:
            return err
        err = inner


def _failure(err: Exception, policy: DownloadPolicy) -> DownloadError:
    """The manifest reason of a transport exception, naming its real cause."""
    cause = _innermost(err)
    if isinstance(cause, _Refused):
        return DownloadError(str(cause), transient=False)
    if isinstance(cause, NameResolutionError):
        reason = f"connection error: DNS lookup failed ({cause.__cause__})"
        return DownloadError(reason, transient=True)
    if isinstance(cause, NewConnectionError):  # a ConnectTimeoutError subclass in urllib3
        return DownloadError(f"connection error: {cause.__cause__ or cause}", transient=True)
    if isinstance(cause, ConnectTimeoutError):
        reason = f"timeout: no connection within connect_timeout={policy.connect_timeout}s"
        return DownloadError(reason, transient=True)
    if isinstance(cause, ReadTimeoutError | TimeoutError):
        return DownloadError(
            f"timeout: no data for read_timeout={policy.read_timeout}s", transient=True
        )
    if isinstance(err, requests.exceptions.SSLError):
        return DownloadError(f"TLS error: {cause}", transient=True)
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return DownloadError(f"broken transfer: {cause!r}", transient=True)
    if isinstance(err, requests.exceptions.ContentDecodingError):
        return DownloadError(f"undecodable body: {cause}", transient=False)
    if isinstance(cause, HTTPException):  # BadStatusLine, LineTooLong, RemoteDisconnected
        return DownloadError(f"bad HTTP response: {cause!r}", transient=True)
    if isinstance(err, requests.ConnectionError):
        return DownloadError(f"connection error: {cause}", transient=True)
    if isinstance(err, requests.exceptions.InvalidHeader):
        return DownloadError(f"bad HTTP response: {cause}", transient=False)
    if isinstance(err, requests.exceptions.InvalidURL | LocationValueError | ValueError):
        return DownloadError(f"malformed URL: {type(cause).__name__}: {cause}", transient=False)
    return DownloadError(f"request failed: {type(err).__name__}: {err}", transient=False)


def _fetch_once(
    session: requests.Session,
    adapter: HTTPAdapter,
    url: str,
    dest: Path,
    policy: DownloadPolicy,
    download: _Download,
) -> None:
    """One try of :func:`_get`; every failure, the deadline's first, as DownloadError."""
    try:
        _get(session, adapter, url, dest, policy, download)
    except DownloadError:
        if not download.expired:
            raise
    except (_Refused, requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as err:
        # urllib3's own errors and ValueError (UnicodeError too), which requests lets through:
        # e.g. a malformed URL or Location the checks missed
        if not download.expired:
            raise _failure(err, policy) from None
    if download.expired:
        raise DownloadError(
            f"timeout: longer than total_timeout={policy.total_timeout}s", transient=True
        )


def download(session: requests.Session, url: str, dest: Path, policy: DownloadPolicy) -> int:
    """Download ``url`` into ``dest``; return the number of attempts it took. Raises
    DownloadError with the last reason.

    Transient failures are retried with exponential backoff while ``policy.retries`` and
    ``policy.total_timeout`` allow: the total timeout bounds the whole call (attempts, redirects
    and waits), however slowly the server sends. Redirects are followed by hand, each target
    checked like ``url``, up to ``session.max_redirects``; connections are direct (no
    environment proxy: the SSRF rule of :class:`_Download` must see the real peer address)."""
    problem = url_problem(url)
    if problem is not None:
        raise DownloadError(problem, transient=False)
    state = _Download(policy.total_timeout)
    adapter = _GuardedAdapter(state)
    try:
        attempt = 0
        while True:
            attempt += 1
            try:
                _fetch_once(session, adapter, url, dest, policy, state)
                return attempt
            except DownloadError as err:
                wait = policy.backoff * 2 ** (attempt - 1)
                retry = err.transient and attempt <= policy.retries and not state.expired
                if retry and time.monotonic() + wait >= state.deadline:
                    retry = False  # no time left for another try
                if err.transient and not retry:
                    err.reason += f" (after {attempt} attempts)"
                if not retry:
                    raise
            time.sleep(wait)
    finally:
        adapter.close()
        state.close()


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
