"""Image folders built to break the datamodule: file and folder names that are not UTF-8, a class
whose every image is broken, and symlinks that lead out of ``data.root``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from imblab.data.image_folder import SYMLINK_OUTSIDE, ImageFolderDataModule
from imblab.data.images import Verdict, write_rejected_csv
from imblab.errors import ConfigError
from imblab.pipelines.training import train

from ..conftest import FAST
from .conftest import write_folder

# a name whose bytes are not UTF-8, as Python holds it (surrogate escapes)
NON_UTF8 = os.fsdecode(b"d\xffg")


def module(root: Path, out: Path, **kwargs: object) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("verdict_cache", False)
    dm = ImageFolderDataModule(root=str(root), output_dir=str(out), **kwargs)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def rejected_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "rejected.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- non-UTF-8 names ------------------------------------------------------------------------------


def test_non_utf8_names_are_reported_escaped_and_their_class_trains(
    compose_cfg, tmp_path: Path
) -> None:
    root, out = tmp_path / "imgs", tmp_path / "run"
    write_folder(root, {"cat": 12, NON_UTF8: 12}, size=24)
    (root / "cat" / os.fsdecode(b"bad\xfe.jpg")).write_text("not an image")
    dm = module(root, out)
    assert dm.class_names == ["cat", "d\\xffg"]
    rows = rejected_rows(out)
    assert [Path(r["path"]).name for r in rows] == ["bad\\xfe.jpg"]
    assert rows[0]["verdict"] == "rejected"
    # a run on it logs the escaped class name to TensorBoard (tags, HParams) and metrics.json
    cfg = compose_cfg(
        *[o for o in FAST if not o.startswith("data.")],
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=16",
        "test=false",
    )
    metrics = train(cfg)
    assert "val/f1/d\\xffg" in metrics
    assert rejected_rows(tmp_path)[0]["path"].endswith("bad\\xfe.jpg")


def test_rejected_csv_is_complete_or_untouched(tmp_path: Path) -> None:
    """Written to a temporary file renamed over it: a failure midway leaves the previous file
    (and no temporary file)."""
    path = tmp_path / "rejected.csv"
    write_rejected_csv(path, [Verdict("a.jpg", False, "rejected", "truncated")])
    before = path.read_text()

    def failing() -> object:
        yield Verdict("b.jpg", False, "rejected", "truncated")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_rejected_csv(path, failing())  # type: ignore[arg-type]
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejected.csv"]


# -- a class of broken images ---------------------------------------------------------------------


def test_class_of_broken_images_writes_rejected_csv_then_names_the_reasons(tmp_path: Path) -> None:
    root, out = tmp_path / "imgs", tmp_path / "run"
    write_folder(root, {"cat": 10}, size=24)
    (root / "dog").mkdir()
    for i in range(3):
        (root / "dog" / f"text_{i}.jpg").write_text("<html>no image</html>")
    (root / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        module(root, out)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.root=") and "class 'dog' has 0 usable image(s)" in message
    rows = rejected_rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == [
        "empty.png",
        "text_0.jpg",
        "text_1.jpg",
        "text_2.jpg",
    ]
    reasons = {r["reason"] for r in rows if r["path"].endswith(".jpg")}
    assert len(reasons) == 1  # the three text files share one reason: the commonest, counted
    assert f"3 x {reasons.pop()}" in message and str(out / "rejected.csv") in message


# -- symlinks -------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` (cat, dog) with symlinks out of it (a file, a subfolder, a class folder) and
    inside it (a file and a folder of a hidden folder of root); ``outside`` holds their
    targets."""
    root, outside = tmp_path / "imgs", tmp_path / "outside"
    write_folder(root, {"cat": 10, "dog": 10}, size=24)
    write_folder(outside, {"pool": 4, "elk": 6}, size=24, start=100)
    write_folder(root / ".shared", {"pool": 3}, size=24, start=200)
    (root / "cat" / "out.jpg").symlink_to(outside / "pool" / "img_00100.jpg")
    (root / "cat" / "out_dir").symlink_to(outside / "pool")
    (root / "elk").symlink_to(outside / "elk")
    (root / "dog" / "passwd.jpg").symlink_to("/etc/passwd")
    (root / "dog" / "in.png").symlink_to(root / ".shared" / "pool" / "img_00201.png")
    (root / "dog" / "in_dir").symlink_to(root / ".shared" / "pool")
    (root / "dog" / "loop").symlink_to(root / "dog")  # inside, and a loop: walked once
    return root, outside


def test_symlinks_outside_the_root_are_refused_and_reported(
    tmp_path: Path, linked: tuple[Path, Path]
) -> None:
    root, _ = linked
    out = tmp_path / "run"
    dm = module(root, out, val_fraction=0.0, test_fraction=0.0)
    assert dm.class_names == ["cat", "dog"]  # the symlinked class folder is no class
    refused = {
        Path(r["path"]).relative_to(root).as_posix(): r
        for r in rejected_rows(out)
        if r["reason"] == SYMLINK_OUTSIDE
    }
    assert set(refused) == {"cat/out.jpg", "cat/out_dir", "elk", "dog/passwd.jpg"}
    assert {r["verdict"] for r in refused.values()} == {"rejected"}
    used = {Path(p).relative_to(root).as_posix() for p in dm.files("train")[0]}
    assert not any(p.startswith(("cat/out", "elk", "dog/passwd")) for p in used)
    # symlinks inside the root are followed: the hidden folder's images through both links
    assert {"dog/in.png", "dog/in_dir/img_00200.jpg"} <= used
    assert dm.train_counts == [10, 10 + 1 + 2]  # in_dir's img_00201.png duplicates in.png


def test_follow_symlinks_uses_what_they_point_to(tmp_path: Path, linked: tuple[Path, Path]) -> None:
    root, _ = linked
    (root / "dog" / "passwd.jpg").unlink()
    dm = module(tmp_path / "imgs", tmp_path / "run", follow_symlinks=True, val_fraction=0.0,
                test_fraction=0.0)  # fmt: skip
    assert dm.class_names == ["cat", "dog", "elk"]
    assert dm.train_counts[0] == 10 + 1 + 3  # out.jpg, and out_dir less its copy of out.jpg
    assert dm.train_counts[2] == 6
