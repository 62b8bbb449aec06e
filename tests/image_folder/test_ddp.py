"""``data=image_folder`` under Lightning DDP (2 CPU processes, gloo), with and without the
decoded-image cache: Lightning keeps imblab's samplers, ranks get equal training shares, and
validation sees every item of the split exactly once (an odd split size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_script
from .conftest import write_folder

SCRIPT = Path(__file__).parent / "ddp_train.py"


@pytest.mark.parametrize(
    ("cache", "sampler", "expected"),
    [
        ("none", "inverse", "WeightedClassSampler"),
        pytest.param("memory", "none", "ShuffleSampler", marks=pytest.mark.slow),
    ],
)
def test_ddp_shares_and_exact_validation(
    tmp_path: Path, cache: str, sampler: str, expected: str
) -> None:
    root = tmp_path / "images"
    write_folder(root, {"a": 31, "b": 12}, size=16)
    out = tmp_path / "run"
    out.mkdir()
    # subset_seed 42 seeds the hash split to an odd validation size
    overrides = [
        f"data.cache={cache}",
        f"sampler={sampler}",
        "data.val_fraction=0.3",
        "data.subset_seed=42",
    ]
    run_script(SCRIPT, "2", str(root), str(out), *overrides, cwd=tmp_path)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, rec in enumerate(ranks):
        assert rec["world_size"] == 2
        assert rec["sampler"] == expected and rec["replicas"] == [2, r]
    assert ranks[0]["train_len"] == ranks[1]["train_len"]
    n = ranks[0]["val_size"]
    assert n % 2 == 1, "the test needs a validation split of odd size"
    ids = ranks[0]["val_ids"] + ranks[1]["val_ids"]
    assert sorted(ids) == list(range(n))  # each item on exactly one rank, none padded
    assert ranks[0]["counted"] == ranks[1]["counted"] == n  # counts summed over both ranks
    assert (out / "rejected.csv").read_text().startswith("path,verdict,reason")
