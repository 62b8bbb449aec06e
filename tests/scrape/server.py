"""A local HTTP server on 127.0.0.1 serving good and bad image files and misbehaving endpoints."""

from __future__ import annotations

import gzip
import io
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.scrape.badfiles import image_cases, noise_image

BIG_BYTES = 300_000  # bodies of /big*.jpg, larger than the tests' max_bytes
TRICKLE_S = 12  # the /trickle_*.jpg endpoints send a byte every 0.1 s for this long, then hang up


def _jpeg(seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    noise_image(seed, size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Site:
    """What the server serves: ``files`` by path; ``hits`` counts requests per path."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            """Silent."""

        def _send(self, code: int, body: bytes, length: bool = True) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "image/jpeg")
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _trickle(self, data: bytes) -> None:
            end = time.monotonic() + TRICKLE_S
            for byte in data:
                if time.monotonic() > end:
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            with site.lock:
                site.hits[self.path] += 1
                n = site.hits[self.path]
            if "../" in unquote(path):  # a traversal attempt gets an image: where does it land?
                self._send(200, site.files["/traversal"])
            elif path == "/slow.jpg":
                time.sleep(1.5)
                self._send(200, site.files["/files/jpeg/good.jpg"])
            elif path == "/trickle.jpg":
                self.send_response(200)
                self.end_headers()
                for _ in range(30):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "/trickle_length.jpg":  # slow body of a declared length
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self._trickle(bytes(100_000))
            elif path == "/trickle_headers.jpg":  # slow response headers
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                self._trickle(b"X-Slow: " + b"a" * 60_000)
            elif path == "/redirect":  # 302 to the query's `to`, as given
                self.send_response(302)
                self.send_header("Location", parse_qs(urlsplit(self.path).query)["to"][0])
                self.end_headers()
            elif path == "/bad_length.jpg":  # garbage Content-Length, connection kept open
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
                self.wfile.write(site.files["/files/jpeg/good.jpg"])
                self.wfile.flush()
                time.sleep(3)
            elif path == "/stall_body.jpg":  # 10 of 1000 bytes, then silence
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(bytes(10))
                self.wfile.flush()
                time.sleep(3)
            elif path == "/short_body.jpg":  # 4 of 100 bytes, then hang up
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"abcd")
            elif path == "/bad_status.jpg":
                self.wfile.write(b"HTTQ/1.1 200 OK\r\n\r\nabcd")
            elif path == "/flaky.jpg":
                self._send(500 if n == 1 else 200, site.files["/flaky.jpg"] if n > 1 else b"oops")
            elif path == "/always500.jpg":
                self._send(503, b"busy")
            elif path == "/big.jpg":
                self._send(200, site.files["/big"])
            elif path == "/big_nolength.jpg":
                self._send(200, site.files["/big"], length=False)
            elif path == "/gzip_bomb.jpg":  # 10 MB of zeros in ~10 kB of gzip
                body = gzip.compress(bytes(10_000_000))
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif path == "/redirect-to-file":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
            elif path in site.files:
                body = site.files[path]
                self.send_response(200)
                self.send_header(
                    "Content-Type", "text/html" if path.endswith(".html") else "image/jpeg"
                )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._send(404, b"not found")

    return Handler


class _Server(ThreadingHTTPServer):
    """Quiet about clients that hang up early (the scraper aborts oversize and slow bodies)."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve(
    host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[Site]:
    """Start the server on ``host`` (a free port unless ``port``; HTTPS with ``tls``); yields the
    Site (``base`` = ``http(s)://HOST:PORT``)."""
    site = Site()
    for kind, case in image_cases().items():
        site.files[f"/files/{kind}/{case.filename}"] = case.data
    site.files["/dup/copy.jpg"] = site.files["/files/jpeg/good.jpg"]
    site.files["/flaky.jpg"] = _jpeg(7)
    site.files["/traversal"] = _jpeg(8)
    site.files["/big"] = bytes(BIG_BYTES)
    for i in range(3):
        site.files[f"/dog/{i}.jpg"] = _jpeg(200 + i)
    server = _Server((host, port), _handler(site))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    site.base = f"{'https' if tls else 'http'}://{host}:{server.server_address[1]}"
    images = [p for p in site.files if p.startswith("/dog/")]
    site.files["/index.html"] = (
        "<html><body>"
        + "".join(f'<img src="{site.base}{p}">' for p in images)
        + '<a href="/nowhere.html">more</a></body></html>'
    ).encode()
    site.files["/bing.html"] = (
        "<html><body>"
        + "".join(
            f'<div class="imgpt"><a m="{{&quot;murl&quot;:&quot;{site.base}{p}&quot;}}">x</a></div>'
            for p in images
        )
        + "</body></html>"
    ).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
