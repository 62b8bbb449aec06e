"""``imblab-train``: train a classifier on imbalanced data (Hydra app on ``conf/train.yaml``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from imblab.errors import ConfigError
from imblab.pipelines.training import train
from imblab.sweeps import run_job


@hydra.main(version_base="1.3", config_path="pkg://imblab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train, test, write ``metrics.json`` and ``status.json``; return the monitored metric (the
    sweep objective; None for a failed sweep job, see :func:`imblab.sweeps.run_job`)."""
    try:
        return run_job(cfg, train)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
