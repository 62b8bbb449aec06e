"""The HTTP transport of ``imblab-scrape``: one untrusted download, with its limits and its
watchdog.

:func:`download` fetches one URL into a file: only http(s) URLs (malformed ones are reported,
never raised), a byte cap (also on the decoded body), connect / read / total timeouts (the total
one enforced by a watchdog that shuts the sockets down, :class:`_Download`), retries with
exponential backoff on timeouts, connection errors, HTTP 429 and 5xx, redirects followed by hand,
every connection made by ``_GuardedHTTPConnection`` under the peer-address guard of
:mod:`imblab.scrape.guard`. Every failure ends as a :class:`DownloadError` whose reason names the
real cause (the manifest's ``reason``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
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
from urllib3.util.connection import create_connection

from imblab.scrape.guard import PeerGuard, Refused

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


class _Download:
    """What the connections of one download share: the peer-address guard (the SSRF rule of
    :mod:`imblab.scrape.guard`) and the ``total_timeout`` watchdog.

    Watchdog: at the deadline every socket of the download is shut down, so no read, however
    slow its bytes arrive (body, headers, chunk sizes, compressed stream), outlives it; reads
    then end with whatever error the shutdown causes and :attr:`expired` says why."""

    def __init__(self, total_timeout: float) -> None:
        self.deadline = time.monotonic() + total_timeout
        self.guard = PeerGuard()
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
    """urllib3 connection that resolves its host through the download's guard, connects only to
    the addresses it admits, and puts the socket under the download's watchdog."""

    def __init__(self, *args: Any, download: _Download, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._download = download

    def _new_conn(self) -> socket.socket:
        try:
            ips = self._download.guard.resolve(self.host, self.port)
        except socket.gaierror as gai:
            raise NameResolutionError(self.host, self, gai) from gai
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
    if isinstance(cause, Refused):
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
    except (Refused, requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as err:
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
    environment proxy: the guard of :mod:`imblab.scrape.guard` must see the real peer address)."""
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
