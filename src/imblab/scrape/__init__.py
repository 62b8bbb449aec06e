"""``imblab-scrape``: build a class-per-folder image dataset from search queries and URL lists
(Hydra app on ``conf/scrape.yaml``; reference: docs/scraping.md).

One module per concern; imports point one way, ``cli -> jobs -> engines, transport -> guard``:

- :mod:`~imblab.scrape.cli`: the command line: ``main`` (``imblab-scrape``, ``python -m
  imblab.scrape``) and ``scrape(cfg)``, which checks the config and runs the jobs.
- :mod:`~imblab.scrape.jobs`: the job planning (one job per class and URL, from URL lists and
  search queries), the worker threads that download, validate and file the images, and the
  resumable ``manifest.csv``.
- :mod:`~imblab.scrape.engines`: the search engines: icrawler's built-in crawlers, whose
  downloader only collects the image URLs.
- :mod:`~imblab.scrape.transport`: one untrusted download: URL checks, size cap, timeouts and the
  watchdog enforcing the total one, retries, redirects followed by hand, failure reasons.
- :mod:`~imblab.scrape.guard`: the peer-address guard (SSRF rule): a public URL is never followed
  to a non-public address, checked on the address each connection resolves and connects to.

The package itself imports nothing: import the module you need.
"""
