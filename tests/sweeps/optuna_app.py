"""A Hydra app for the sweeper tests (no training): each job writes the values it got to
``values.json`` in its output dir and returns :func:`objective` of them, or None when ``kind``
is ``fail_kind``. Run it with ``--config-dir DIR --config-name NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def objective(x: float, n: int, kind: str) -> float:
    """A deterministic function of the three searched keys, largest at x = 0.3, n = 1, b."""
    return -((x - 0.3) ** 2) - 0.1 * n + (0.05 if kind == "b" else 0.0)


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "values.json").write_text(json.dumps({"x": cfg.x, "n": cfg.n, "kind": cfg.kind}))
    if cfg.kind == cfg.fail_kind:
        return None
    return objective(cfg.x, cfg.n, cfg.kind)


if __name__ == "__main__":
    main()
