"""`--paired` pairs test images, not ids: runs whose predictions record different split
fingerprints are refused, and the output says what the interval covers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imblab.compare import build_parser, compare
from imblab.errors import ConfigError
from imblab.reports import format_paired, paired_compare, save_predictions


def run(path: Path, seed: int, fingerprint: str | None) -> Path:
    """Predictions of 200 samples with the same ids and targets in every run."""
    rng = np.random.default_rng(seed)
    targets = np.arange(200) % 3
    probs = rng.dirichlet(np.ones(3), size=200)
    path.mkdir(parents=True)
    save_predictions(path / "predictions.npz", probs, targets, np.arange(200), fingerprint)
    return path


def test_runs_on_other_images_are_refused_though_ids_and_targets_match(tmp_path: Path) -> None:
    a = run(tmp_path / "a", 0, "a" * 64)
    b = run(tmp_path / "b", 1, "b" * 64)
    with pytest.raises(ConfigError, match="evaluated on different images"):
        paired_compare(a, b, n_boot=20)
    parser = build_parser()
    assert compare(parser.parse_args(["--paired", str(a), str(b), "--n-boot", "20"])) == 2


def test_the_output_says_it_covers_test_set_noise_only(tmp_path: Path) -> None:
    a = run(tmp_path / "a", 0, "c" * 64)
    b = run(tmp_path / "b", 1, "c" * 64)
    result = paired_compare(a, b, n_boot=20)
    assert result["fingerprint"] == "c" * 64
    text = format_paired(result)
    assert "Test-set noise only" in text and "--baseline" in text
    assert "only ids and targets" not in text


def test_predictions_without_a_fingerprint_are_compared_by_ids_and_says_so(
    tmp_path: Path,
) -> None:
    a = run(tmp_path / "a", 0, None)
    b = run(tmp_path / "b", 1, "d" * 64)
    result = paired_compare(a, b, n_boot=20)
    assert result["fingerprint"] is None
    assert "only ids and targets were checked" in format_paired(result)
