"""The command line of ``imblab-scrape``: the Hydra app on ``conf/scrape.yaml``.

:func:`scrape` checks the config's download and validation values, plans the jobs and runs them
(:mod:`imblab.scrape.jobs`); :func:`main` is ``imblab-scrape``, turning a ``ConfigError`` into
one line and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from imblab.errors import ConfigError, config_error
from imblab.scrape.jobs import MANIFEST_NAME, plan_jobs, read_manifest, scrape_jobs
from imblab.scrape.transport import DownloadPolicy

log = logging.getLogger(__name__)


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


def _run(cfg: DictConfig) -> None:
    """Scrape; a wrong config value exits with code 2 and a one-line message."""
    try:
        scrape(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


# Hydra names the job after the last part of its task function's module; the package's name
# keeps it "scrape", so each run's log stays <run dir>/scrape.log (docs/scraping.md#resuming).
_run.__module__ = "imblab.scrape"
main = hydra.main(version_base="1.3", config_path="pkg://imblab.conf", config_name="scrape")(_run)
