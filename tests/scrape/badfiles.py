"""Good and bad image files of every kind the web returns, generated with Pillow, for tests.

``image_cases()`` gives each kind as bytes with the verdict validation must give it;
``write_image_tree(root)`` writes a class-per-folder tree of good images and every bad kind and
returns what each file's verdict must be (the image-folder datamodule's tests use it too).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# what EXIF-rotated test images look like upright: (width, height), marker in the top-left
UPRIGHT_SIZE = (32, 48)
MARKER = (255, 0, 0)


@dataclass(frozen=True)
class Case:
    """One file: ``filename`` (its extension may lie about ``data``), the verdict ``status``
    validation must give it and a substring of the verdict's ``reason``, the real ``fmt``
    ("" when not an image) and the loaded RGB ``size`` of an accepted file."""

    filename: str
    data: bytes
    status: str
    reason: str
    fmt: str = ""
    size: tuple[int, int] = (0, 0)


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_image(
    seed: int, size: int = 32, colour: tuple[int, int, int] = (128, 128, 128)
) -> Image.Image:
    """An RGB image: ``colour`` plus uniform noise in [-40, 40] from ``seed`` (unique bytes)."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(colour, dtype=np.int16) + rng.integers(-40, 41, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def upright_marker_image() -> Image.Image:
    """UPRIGHT_SIZE, white with a MARKER-coloured top-left block: shows orientation."""
    im = Image.new("RGB", UPRIGHT_SIZE, (255, 255, 255))
    im.paste(MARKER, (0, 0, UPRIGHT_SIZE[0] // 2, UPRIGHT_SIZE[1] // 3))
    return im


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def image_cases(size: int = 32) -> dict[str, Case]:
    """Every kind of file, by a short kind name: good ones, ones accepted after conversion and
    ones rejected (the reason substrings are the contract of ``imblab.data.images``)."""
    s = (size, size)
    jpeg = _encode(noise_image(101, size), "JPEG", quality=90)
    png = _encode(noise_image(102, size), "PNG")
    rgba = Image.new("RGBA", s, (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, size // 2, size))
    pal = noise_image(103, size).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    gif_frames = [noise_image(110 + i, size).convert("P") for i in range(3)]
    gif = io.BytesIO()
    gif_frames[0].save(gif, format="GIF", save_all=True, append_images=gif_frames[1:], duration=50)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    stored = upright_marker_image().transpose(Image.Transpose.ROTATE_90)
    i16 = Image.fromarray(np.arange(size * size, dtype=np.uint16).reshape(s) * 60)
    return {
        "jpeg": Case("good.jpg", jpeg, "ok", "", "JPEG", s),
        "png": Case("good.png", png, "ok", "", "PNG", s),
        "truncated_jpeg": Case(
            "truncated.jpg", jpeg[: len(jpeg) * 3 // 4], "rejected", "truncated"
        ),
        "truncated_png": Case("truncated.png", png[: len(png) * 2 // 3], "rejected", "corrupt"),
        "html_as_jpg": Case(
            "page.jpg",
            b"<!DOCTYPE html>\n<html><body>Access denied</body></html>\n",
            "rejected",
            "not an image: HTML",
        ),
        "json_as_jpg": Case(
            "api.jpg",
            json.dumps({"error": "rate limited"}).encode(),
            "rejected",
            "not an image: JSON",
        ),
        "zero_byte": Case("empty.jpg", b"", "rejected", "empty file"),
        "cmyk": Case(
            "cmyk.jpg",
            _encode(noise_image(104, size).convert("CMYK"), "JPEG"),
            "ok",
            "CMYK converted to RGB",
            "JPEG",
            s,
        ),
        "palette_transparency": Case(
            "palette.png",
            _encode(pal, "PNG", transparency=0),
            "ok",
            "P converted to RGB",
            "PNG",
            s,
        ),
        "sixteen_bit": Case("grey16.png", _encode(i16, "PNG"), "ok", "converted to RGB", "PNG", s),
        "la": Case(
            "la.png",
            _encode(noise_image(105, size).convert("LA"), "PNG"),
            "ok",
            "LA converted to RGB",
            "PNG",
            s,
        ),
        "rgba": Case("rgba.png", _encode(rgba, "PNG"), "ok", "RGBA converted to RGB", "PNG", s),
        "animated_gif": Case(
            "anim.gif", gif.getvalue(), "ok", "3 frames: first frame used", "GIF", s
        ),
        "webp_as_jpg": Case(
            "webp.jpg",
            _encode(noise_image(106, size), "WEBP", lossless=True),
            "ok",
            "WEBP data behind a .jpg name",
            "WEBP",
            s,
        ),
        "png_as_jpg": Case(
            "png.jpg",
            _encode(noise_image(107, size), "PNG"),
            "ok",
            "PNG data behind a .jpg name",
            "PNG",
            s,
        ),
        "exif_rotated": Case(
            "rotated.jpg",
            _encode(stored, "JPEG", exif=exif, quality=95),
            "ok",
            "EXIF orientation 6 applied",
            "JPEG",
            UPRIGHT_SIZE,
        ),
        "bomb": Case("bomb.png", png_header_bomb(), "rejected", "decompression bomb"),
        "tiny": Case(
            "tiny.png", _encode(noise_image(108, 8), "PNG"), "rejected", "too small", "PNG", (8, 8)
        ),
    }


CLASS_COLOURS = ((200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60))


def write_image_tree(
    root: str | Path,
    *,
    classes: tuple[str, ...] = ("cat", "dog"),
    good_per_class: tuple[int, ...] = (6, 3),
    size: int = 32,
) -> dict[str, Case]:
    """Write ``root/<class>/`` folders: ``good_per_class[k]`` good JPEGs of class k (its colour
    in CLASS_COLOURS plus unique noise, so a model can learn them), every kind of
    :func:`image_cases` spread over the classes (files named ``<kind>_<filename>``), and a
    byte-identical copy of ``<classes[0]>/good_000.jpg`` in the last class (a cross-class
    duplicate; the first by sorted path is kept). Returns the expected case of every file by its
    path relative to ``root`` (posix)."""
    root = Path(root)
    expected: dict[str, Case] = {}
    for k, (name, n) in enumerate(zip(classes, good_per_class, strict=True)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            im = noise_image(1000 * k + i, size, CLASS_COLOURS[k % len(CLASS_COLOURS)])
            data = _encode(im, "JPEG", quality=90)
            expected[f"{name}/good_{i:03d}.jpg"] = Case(
                f"good_{i:03d}.jpg", data, "ok", "", "JPEG", (size, size)
            )
    for j, (kind, case) in enumerate(image_cases(size).items()):
        name = classes[j % len(classes)]
        expected[f"{name}/{kind}_{case.filename}"] = case
    first = expected[f"{classes[0]}/good_000.jpg"]
    dup = Case("dup.jpg", first.data, "duplicate", f"{classes[0]}/good_000.jpg", "JPEG", first.size)
    expected[f"{classes[-1]}/zz_copy_of_good_000.jpg"] = dup
    for rel, case in expected.items():
        (root / rel).write_bytes(case.data)
    return expected
