"""The search engines of ``imblab-scrape``: image URLs for a query from an ``icrawler`` built-in
crawler.

icrawler fetches and parses the engine's result pages; its own downloader is replaced by
:class:`UrlCollector`, which only records the image URLs, so that every image is downloaded by
imblab's guarded transport (:mod:`imblab.scrape.transport`), never by icrawler.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from icrawler import Downloader
from icrawler import builtin as icrawler_builtin

from imblab.errors import config_error

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
