"""Issue 16's scrape items against local servers: malformed URLs (3), the total timeout (4),
non-UTF-8 URL lists (6), the SSRF rule on redirects and DNS answers (14), failure reasons that
name the real cause (15)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from imblab.errors import ConfigError
from imblab.scrape import guard, jobs
from imblab.scrape.cli import scrape
from imblab.scrape.guard import address_kind
from imblab.scrape.jobs import read_manifest, read_url_list
from imblab.scrape.transport import DownloadError, DownloadPolicy, download
from tests.conftest import Compose
from tests.scrape.cli import run_cli
from tests.scrape.server import TRICKLE_S, Site, serve
from tests.scrape.test_scrape import FAST


@pytest.fixture
def site() -> Iterator[Site]:
    with serve() as s:
        yield s


def _scrape_list(
    compose_cfg: Compose, tmp_path: Path, urls: list[str], *overrides: str
) -> dict[str, dict[str, str]]:
    """Scrape ``urls`` as class cat; the manifest rows by URL."""
    (tmp_path / "cat.txt").write_text("\n".join(urls) + "\n")
    root = tmp_path / "ds"
    lists = f"+url_lists.cat={tmp_path / 'cat.txt'}"
    scrape(compose_cfg(f"root={root}", lists, *FAST, *overrides, config_name="scrape"))
    return {r["url"]: r for r in read_manifest(root / "manifest.csv")}


# --- 3: malformed URLs ---------------------------------------------------------------------------

MALFORMED = {
    "http://a..b/x.png": "empty label or one over 63 characters",
    "http://" + "a" * 64 + ".com/x.png": "empty label or one over 63 characters",
    "http://\u00e9\u00e9..x/x.png": "empty label or one over 63 characters",  # IDNA, then empty
    "http://[::1/x.png": "Invalid IPv6 URL",
    "http://a.com:99999/x.png": "malformed URL: InvalidURL",
    "http://.a.com/x.png": "malformed URL: InvalidURL",
    "http://\u2603.com/x.png": "not a valid IDNA label",
}


def test_malformed_urls_fail_with_a_reason_and_the_scrape_goes_on(
    site: Site, tmp_path: Path, compose_cfg: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_redirect = site.url("/redirect?to=" + quote("http://a..b/y.png"))
    surrogate = site.url("/dog/\ud800.jpg")  # a search result's JSON can hold a lone surrogate
    monkeypatch.setattr(jobs, "search_urls", lambda *args: [surrogate])
    urls = [site.url("/dog/0.jpg"), *MALFORMED, bad_redirect, site.url("/dog/1.jpg")]
    args = ["+queries.cat=[q]"]
    rows = _scrape_list(compose_cfg, tmp_path, urls, *args)
    for url, reason in MALFORMED.items():
        assert rows[url]["status"] == "failed" and reason in rows[url]["reason"], rows[url]
    assert rows[bad_redirect]["status"] == "failed"
    assert "redirect to 'http://a..b/y.png': malformed URL" in rows[bad_redirect]["reason"]
    assert rows[site.url("/dog/0.jpg")]["status"] == rows[site.url("/dog/1.jpg")]["status"] == "ok"
    escaped = site.url("/dog/\\ud800.jpg")
    assert rows[escaped]["status"] == "failed" and rows[escaped]["reason"] == "HTTP 404"
    assert len(rows) == len(urls) + 1
    # a rerun skips them all: none of them stops it
    assert _scrape_list(compose_cfg, tmp_path, urls, *args) == rows
    assert len(read_manifest(tmp_path / "ds" / "manifest.csv")) == len(rows)


# --- 4: total timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/trickle_length.jpg", "/trickle_headers.jpg"])
def test_total_timeout_bounds_a_slow_body_or_headers(
    site: Site, tmp_path: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 2.0
    policy = DownloadPolicy(total_timeout=total, read_timeout=1, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(requests.Session(), site.url(path), tmp_path / "t", policy)
    elapsed = time.monotonic() - start
    with capsys.disabled():
        print(f"\n{path}: total_timeout={total}s, ended after {elapsed:.2f}s: {err.value.reason}")
    assert err.value.reason.startswith("timeout: longer than total_timeout=2.0s"), err.value.reason
    assert err.value.transient
    assert elapsed < total + 3 < TRICKLE_S  # the bound under test; the server trickles for 12 s
    assert site.hits[path] == 1  # no retry after the deadline


def test_https_goes_through_the_guarded_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TLS connection class: certificate checked, total timeout held on a slow TLS body."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    policy = DownloadPolicy(total_timeout=2, read_timeout=1, retries=0)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with serve(tls=tls) as site:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        with pytest.raises(DownloadError, match=r"^TLS error: .*CERTIFICATE_VERIFY_FAILED"):
            download(requests.Session(), site.url("/dog/0.jpg"), tmp_path / "x", policy)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert download(requests.Session(), site.url("/dog/0.jpg"), tmp_path / "x", policy) == 1
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"^timeout: longer than total_timeout=2"):
            download(requests.Session(), site.url("/trickle_length.jpg"), tmp_path / "x", policy)
        elapsed = time.monotonic() - start
    with capsys.disabled():
        print(f"\nhttps /trickle_length.jpg: total_timeout=2s, ended after {elapsed:.2f}s")
    assert elapsed < 2 + 3


# --- 6: URL lists that are not UTF-8 -------------------------------------------------------------


def test_a_url_list_that_is_not_utf8_is_refused_naming_line_and_column(
    site: Site, tmp_path: Path, compose_cfg: Compose
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    cafe = site.url("/caf\u00e9.jpg")
    latin1 = f"# chats\n{site.url('/dog/0.jpg')}\n{cafe}\n".encode("latin-1")
    (lists / "cat.txt").write_bytes(latin1)
    column = len(site.url("/caf")) + 1
    root = tmp_path / "ds"
    given = {"url_lists.cat": f"+url_lists.cat={lists / 'cat.txt'}", "url_dir": f"url_dir={lists}"}
    for key, arg in given.items():
        cfg = compose_cfg(f"root={root}", arg, *FAST, config_name="scrape")
        with pytest.raises(ConfigError) as err:
            scrape(cfg)
        assert str(err.value) == (
            f"{key}='{lists / 'cat.txt'}': not UTF-8: byte 0xe9 at line 3, column {column}; "
            "save the list as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
        )
    assert site.hits["/dog/0.jpg"] == 0  # refused before any download
    # a byte-order mark (Windows editors) is no part of the first URL
    (lists / "cat.txt").write_text(site.url("/dog/0.jpg") + "\n", encoding="utf-8-sig")
    assert read_url_list(lists / "cat.txt") == [site.url("/dog/0.jpg")]


def test_cli_exits_2_with_one_line_for_a_list_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cat.txt").write_bytes(b"http://127.0.0.1:9/\xff.jpg\n")
    argv = [
        "imblab-scrape",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"root={tmp_path / 'ds'}",
        f"+url_lists.cat={tmp_path / 'cat.txt'}",
    ]
    assert run_cli(argv[1:], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"error: url_lists.cat='{tmp_path / 'cat.txt'}': not UTF-8: byte 0xff at line 1, column 20;"
    )


# --- 14: SSRF rule -------------------------------------------------------------------------------

PUBLIC = "127.0.0.2"  # counts as a public address in these tests


@pytest.fixture
def public_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the classifier treat 127.0.0.2 as public (no public address is reachable here)."""
    monkeypatch.setattr(
        guard, "address_kind", lambda ip: None if ip == PUBLIC else address_kind(ip)
    )


def _resolve(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> None:
    """DNS for the test: each lookup of a name in ``answers`` gives its next list of addresses
    (the last one from then on); other names resolve as usual."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        n = calls[host] = calls.get(host, -1) + 1
        ips = answers[host][min(n, len(answers[host]) - 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_public_url_is_not_redirected_to_loopback(
    site: Site, tmp_path: Path, compose_cfg: Compose, public_ip: None
) -> None:
    with serve(PUBLIC) as public:
        redirect = "/redirect?to=" + quote(site.url("/dog/0.jpg"))
        to_loopback = public.url(redirect)
        loopback_to_loopback = site.url("/redirect?to=" + quote(site.url("/dog/1.jpg")))
        loopback_to_public = site.url("/redirect?to=" + quote(public.url("/dog/2.jpg")))
        urls = [to_loopback, loopback_to_loopback, loopback_to_public, public.url("/dog/0.jpg")]
        rows = _scrape_list(compose_cfg, tmp_path, urls)
    assert rows[to_loopback]["status"] == "failed"
    assert rows[to_loopback]["reason"].startswith(
        "SSRF rule: 127.0.0.1 resolves to 127.0.0.1, a loopback address; a public URL is never "
        "followed (by a redirect or a new DNS answer) to a non-public address"
    )
    assert public.hits[redirect] == 1 and site.hits["/dog/0.jpg"] == 0
    # URLs that are themselves local are fetched as given, redirects included
    for url in urls[1:]:
        assert rows[url]["status"] in ("ok", "duplicate"), rows[url]


def test_a_new_dns_answer_does_not_move_a_public_host_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public_ip: None
) -> None:
    with serve() as site, serve(PUBLIC, int(site.base.rsplit(":", 1)[1])) as public:
        port = site.base.rsplit(":", 1)[1]
        _resolve(monkeypatch, {"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
        policy = DownloadPolicy(retries=2, backoff=0.01, read_timeout=1, total_timeout=5)
        # the first try (public) gets a 503, the retry's lookup answers 127.0.0.1
        url = f"http://rebind.test:{port}/always500.jpg"
        refused = r"^SSRF rule: rebind\.test resolves to 127\.0\.0\.1"
        with pytest.raises(DownloadError, match=refused):
            download(requests.Session(), url, tmp_path / "x", policy)
        assert public.hits["/always500.jpg"] == 1 and site.hits["/always500.jpg"] == 0
        # an answer with public and loopback addresses: only the public ones are tried
        _resolve(monkeypatch, {"mixed.test": [["127.0.0.1", PUBLIC]]})
        url = f"http://mixed.test:{port}/dog/0.jpg"
        assert download(requests.Session(), url, tmp_path / "y", policy) == 1
        assert public.hits["/dog/0.jpg"] == 1 and site.hits["/dog/0.jpg"] == 0


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("0.0.0.0", "unspecified"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "non-global"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_address_kind(ip: str, kind: str | None) -> None:
    assert address_kind(ip) == kind


# --- 15: reasons that name the real cause --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/bad_length.jpg", "bad Content-Length header: 'abc'"),
        ("/stall_body.jpg", "timeout: no data for read_timeout=0.5s (after 1 attempts)"),
        ("/short_body.jpg", "broken transfer: IncompleteRead(4 bytes read, 96 more expected)"),
        ("/bad_status.jpg", "bad HTTP response: BadStatusLine('HTTQ/1.1 200 OK\\r\\n')"),
        ("http://127.0.0.1:1/x.jpg", "connection error: [Errno 111] Connection refused"),
        ("http://nowhere.test/x.jpg", "connection error: DNS lookup failed ([Errno -2] Name"),
    ],
)
def test_failure_reasons_name_the_cause(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, reason: str
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "nowhere.test":  # no DNS query leaves the machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy = DownloadPolicy(read_timeout=0.5, total_timeout=5, retries=0)
    url = path if path.startswith("http") else site.url(path)
    with pytest.raises(DownloadError) as err:
        download(requests.Session(), url, tmp_path / "x", policy)
    assert err.value.reason.startswith(reason), err.value.reason
