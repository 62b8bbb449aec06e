"""``imblab-train``: train a classifier on imbalanced data (Hydra app on ``conf/train.yaml``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from imblab.errors import ConfigError
from imblab.training import train


@hydra.main(version_base="1.3", config_path="pkg://imblab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train, test, write ``metrics.json``; return the monitored metric (the sweep objective)."""
    try:
        metrics = train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    value = metrics.get(cfg.monitor.metric)
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
