"""``test_every_epoch`` under Lightning DDP (2 and 3 CPU processes, gloo, an uneven test split):
every rank holds the accuracy of the whole test split, the single-process one."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_script
from .ddp.validate import synthetic

SCRIPT = Path(__file__).parent / "ddp" / "every_epoch.py"
N, C = 1001, 5  # N is divisible by neither 2 nor 3


def test_every_rank_holds_the_accuracy_of_the_whole_test_split(tmp_path: Path) -> None:
    logits, target = synthetic(N, C)
    expected = float((logits.argmax(dim=1) == target).double().mean())  # numpy-free reference
    for world in (2, 3):
        run_script(SCRIPT, str(world), str(tmp_path), str(N), str(C), cwd=tmp_path)
        for rank in range(world):
            record = json.loads((tmp_path / f"rank{rank}_of_{world}.json").read_text())
            assert record["accuracy"] == expected, (world, rank)
