"""Second validation pass with the verdict cache against the first (full decode of every file).

Writes a class-per-folder tree of JPEGs, then times in this one process: ``validate_folder`` with
``cache=False`` (the baseline: every file read, hashed and fully decoded), the first cached pass
(the same plus writing ``.imblab_verdicts.json``) and the second cached pass (a stat per file and
the JSON file).

    python tests/benchmarks/bench_verdict_cache.py [--images 1000] [--side 512]
    pytest -m benchmark tests/benchmarks/bench_verdict_cache.py -s      # small smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imblab.data.images import CACHE_NAME, validate_folder


def write_tree(root: Path, images: int, side: int) -> None:
    """``images`` noise JPEGs of ``side`` x ``side`` pixels in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=85)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(images: int, side: int) -> dict[str, float]:
    """Seconds of each pass and the speed-up of the cached pass over the uncached baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, images, side)
        baseline = timed(lambda: validate_folder(root, cache=False))
        first = timed(lambda: validate_folder(root))
        second = timed(lambda: validate_folder(root))
        assert (root / CACHE_NAME).is_file()
    return {"uncached": baseline, "first": first, "cached": second, "speedup": baseline / second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args()
    r = run(args.images, args.side)
    print(
        f"{args.images} JPEGs {args.side}x{args.side}: uncached {r['uncached']:.2f} s, "
        f"first cached pass {r['first']:.2f} s, second pass {r['cached']:.3f} s "
        f"({r['speedup']:.0f}x faster than uncached)"
    )


@pytest.mark.benchmark
def test_verdict_cache_speedup() -> None:
    r = run(images=100, side=256)
    print(r)
    assert r["speedup"] > 1


if __name__ == "__main__":
    main()
