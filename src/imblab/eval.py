"""``imblab-eval``: evaluate a trained checkpoint and write its reports (Hydra app on
``conf/eval.yaml``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from imblab.errors import ConfigError
from imblab.pipelines.evaluation import evaluate_checkpoint


@hydra.main(version_base="1.3", config_path="pkg://imblab.conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Evaluate ``ckpt_path``; write the reports, figures and predictions; return macro-F1."""
    try:
        scores = evaluate_checkpoint(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    value = scores.get("f1_macro")
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
