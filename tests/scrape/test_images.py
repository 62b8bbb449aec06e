"""Image validation: a verdict and a reason for every kind of file the web returns."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from imblab.data import images
from imblab.data.images import (
    CACHE_NAME,
    Verdict,
    load_rgb,
    validate_folder,
    validate_image,
    write_rejected_csv,
)
from tests.scrape.badfiles import MARKER, UPRIGHT_SIZE, image_cases, noise_image, write_image_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tree")
    return root, write_image_tree(root)


def _rel(root: Path, v: Verdict) -> str:
    return Path(v.path).relative_to(root).as_posix()


def test_every_kind_gets_its_verdict(tree: tuple[Path, dict]) -> None:
    root, expected = tree
    accepted, rejected = validate_folder(root, cache=False)
    got = {_rel(root, v): v for v in accepted + rejected}
    assert set(got) == set(expected)
    for rel, case in expected.items():
        v = got[rel]
        assert (v.status, v.ok) == (case.status, case.status == "ok"), (rel, v)
        assert case.reason in v.reason, (rel, v.reason)
        if case.fmt:
            assert v.format == case.fmt, rel
        if case.status != "rejected" or case.size != (0, 0):
            assert (v.width, v.height) == case.size, rel
    assert all(v.ok for v in accepted) and not any(v.ok for v in rejected)
    assert [v.path for v in accepted] == sorted(v.path for v in accepted)


def test_accepted_files_load_as_8bit_rgb_of_the_verdict_size(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    accepted, _ = validate_folder(root, cache=False)
    for v in accepted:
        im = load_rgb(v.path)
        assert im.mode == "RGB" and im.size == (v.width, v.height), v.path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "r.jpg"
    path.write_bytes(image_cases()["exif_rotated"].data)
    with Image.open(path) as raw:  # stored sideways
        assert raw.size == UPRIGHT_SIZE[::-1]
    im = np.asarray(load_rgb(path)).astype(int)
    assert im.shape[:2] == UPRIGHT_SIZE[::-1]  # (height, width) of the upright image
    assert np.abs(im[2, 2] - MARKER).max() < 40  # marker top-left
    assert np.abs(im[-3, -3] - 255).max() < 40  # white bottom-right


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(image_cases()["rgba"].data)  # opaque blue left half, transparent right
    im = np.asarray(load_rgb(path))
    assert (im[:, :16] == (0, 0, 255)).all()
    assert (im[:, 16:] == 255).all()
    la = np.zeros((20, 20, 2), np.uint8)
    la[..., 0], la[:10, :, 1] = 50, 255  # grey 50, top half opaque
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    im = np.asarray(load_rgb(tmp_path / "la.png"))
    assert (im[:10] == 50).all() and (im[10:] == 255).all()


def test_palette_transparency_index_becomes_white(tmp_path: Path) -> None:
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.paste(0, (0, 0, 20, 5))
    pal.save(tmp_path / "p.png", transparency=0)
    im = np.asarray(load_rgb(tmp_path / "p.png"))
    assert (im[:5] == 255).all() and (im[5:] == (10, 200, 30)).all()


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    values = np.array([[0, 128, 257, 1000], [30000, 65535, 65280, 12345]] * 8, np.uint16)
    values = np.tile(values, (1, 4))
    Image.fromarray(values).save(tmp_path / "g.png")
    v = validate_image(tmp_path / "g.png")
    assert v.ok and v.mode in ("I;16", "I") and "converted to RGB" in v.reason
    im = np.asarray(load_rgb(tmp_path / "g.png"))
    want = np.floor(values / 257 + 0.5).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(im[..., c], want)


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=40)
    v = validate_image(tmp_path / "a.gif")
    assert v.ok and v.format == "GIF" and "3 frames" in v.reason
    assert np.asarray(load_rgb(tmp_path / "a.gif"))[10, 10].tolist() == [255, 0, 0]


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = ImageFile.ImageFile.load

    def counting(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return calls


def test_bombs_are_rejected_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    noise_image(1, 64).save(path)
    path2 = tmp_path / "bomb.png"
    path2.write_bytes(image_cases()["bomb"].data)
    loads = _count_loads(monkeypatch)
    v = validate_image(path, max_pixels=64 * 64 - 1)
    assert not v.ok and "decompression bomb" in v.reason and "max_pixels=4095" in v.reason
    assert (v.width, v.height) == (64, 64)
    v2 = validate_image(path2)
    assert not v2.ok and "decompression bomb" in v2.reason
    with pytest.raises(ValueError, match="decompression bomb"):
        load_rgb(path, max_pixels=100)
    assert loads == []
    assert validate_image(path, max_pixels=64 * 64).ok and loads  # decoded when allowed


def test_only_web_raster_formats_are_opened(tmp_path: Path) -> None:
    noise_image(3).save(tmp_path / "x.ppm")  # Pillow reads PPM, validation does not
    v = validate_image(tmp_path / "x.ppm")
    assert not v.ok and v.reason.startswith("not an image: unrecognised or unsupported format")


def test_min_side_applies_to_the_smaller_side(tmp_path: Path) -> None:
    Image.new("RGB", (200, 15)).save(tmp_path / "strip.png")
    v = validate_image(tmp_path / "strip.png")
    assert not v.ok and "too small: 200x15" in v.reason
    assert validate_image(tmp_path / "strip.png", min_side=15).ok


def test_load_rgb_raises_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"<html></html>")
    with pytest.raises(ValueError, match=r"x\.jpg: not an image: HTML"):
        load_rgb(tmp_path / "x.jpg")
    assert validate_image(tmp_path / "missing.jpg").reason.startswith("unreadable file")


def test_duplicates_keep_the_first_by_sorted_path(tmp_path: Path) -> None:
    noise_image(5).save(tmp_path / "src.png")
    data = (tmp_path / "src.png").read_bytes()
    for rel in ("b/1.png", "a/2.png", "a/10.png", "c/0.PNG"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    accepted, rejected = validate_folder(tmp_path, cache=False)
    assert [_rel(tmp_path, v) for v in accepted] == ["a/10.png"]
    assert [(_rel(tmp_path, v), v.status) for v in rejected] == [
        ("a/2.png", "duplicate"),
        ("b/1.png", "duplicate"),
        ("c/0.PNG", "duplicate"),
    ]
    assert all(v.reason == f"duplicate of {tmp_path / 'a/10.png'}" for v in rejected)


def test_only_image_files_in_class_folders_are_scanned(tmp_path: Path) -> None:
    for rel in ("top.jpg", "a/x.JPEG", "a/sub/y.webp", "a/notes.txt", "a/.hidden.jpg", ".h/z.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        noise_image(len(rel)).save(tmp_path / rel, format="WEBP" if "webp" in rel else "JPEG")
    accepted, rejected = validate_folder(tmp_path, cache=False)
    assert [_rel(tmp_path, v) for v in accepted] == ["a/sub/y.webp", "a/x.JPEG"]
    assert rejected == []


def test_cached_verdicts_are_not_decoded_again(
    tree: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    for rel, case in tree[1].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(case.data)
    first = validate_folder(root)
    assert (root / CACHE_NAME).is_file()
    decoded: list[str] = []
    real = images._decode

    def counting(data: bytes, name: str, max_pixels: int):  # type: ignore[no-untyped-def]
        decoded.append(Path(name).relative_to(root).as_posix())
        return real(data, name, max_pixels)

    monkeypatch.setattr(images, "_decode", counting)
    assert validate_folder(root) == first and decoded == []
    changed = root / "cat/good_001.jpg"
    changed.write_bytes(tree[1]["cat/html_as_jpg_page.jpg"].data)
    os.utime(changed, ns=(1, 1))  # a new (size, mtime_ns) key
    _, rejected = validate_folder(root)
    assert decoded == ["cat/good_001.jpg"]
    assert any(_rel(root, v) == "cat/good_001.jpg" and "HTML" in v.reason for v in rejected)
    decoded.clear()
    validate_folder(root, min_side=20)  # other settings: everything again
    assert len(decoded) == len(tree[1])
    decoded.clear()
    validate_folder(root, cache=False)
    assert len(decoded) == len(tree[1])


def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    (tmp_path / CACHE_NAME).write_text("{not json")
    assert validate_folder(tmp_path) == validate_folder(tmp_path, cache=False)
    assert json.loads((tmp_path / CACHE_NAME).read_text())["version"] == 1


def test_workers_give_the_same_verdicts(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    assert validate_folder(root, cache=False, workers=2) == validate_folder(root, cache=False)


def test_rejected_csv(tmp_path: Path) -> None:
    verdicts = [
        Verdict("a/x.jpg", False, "rejected", "not an image: HTML"),
        Verdict("b/y, z.jpg", False, "duplicate", "duplicate of a/w.jpg"),
    ]
    write_rejected_csv(tmp_path / "r.csv", verdicts)
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["path", "verdict", "reason"],
        ["a/x.jpg", "rejected", "not an image: HTML"],
        ["b/y, z.jpg", "duplicate", "duplicate of a/w.jpg"],
    ]
