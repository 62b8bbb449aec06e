"""Image-file validation shared by ``imblab-scrape`` and the image-folder datamodule.

Every file gets a :class:`Verdict` (never an exception): it is fully decoded (not just its
header), after a header-only size check that rejects decompression bombs before any pixel is
decoded. Accepted files load through :func:`load_rgb`, which applies exactly the decoding the
verdict was made with: first frame, EXIF orientation, 8-bit RGB.

Conversion to RGB (the decision, so that every accepted file trains as the same kind of tensor):

* alpha (``RGBA``, ``LA``, ``PA``, palette or grey with a ``transparency`` entry) is composited
  onto **white**, as a transparent web image shows on a page (dropping alpha would expose
  whatever colour the transparent pixels happen to hold, often black);
* 16-bit grey (``I;16*``, and ``I``, which 16-bit PNGs may open as) is scaled from [0, 65535] to
  [0, 255] (divided by 257, rounded, clipped); 32-bit float (``F``) is clipped to [0, 255];
* everything else (``CMYK``, ``P``, ``L``, ``1``, ``YCbCr``, ...) goes through Pillow's convert.

Only raster formats common on the web are opened (:data:`SAFE_FORMATS`); this also keeps
Pillow away from formats that shell out to other programs (EPS runs Ghostscript).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import (  # noqa: F401 (the plugins register the openers of SAFE_FORMATS)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

DEFAULT_MIN_SIDE = 16
# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS)
DEFAULT_MAX_PIXELS = 89_478_485
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
# (multi-picture JPEGs from phones open as JPEG and report format MPO)
SAFE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# file extension of each format, for files named after their real format (the scraper)
FORMAT_EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
# the file extensions that name each format truthfully
FORMAT_SUFFIXES = {
    "JPEG": {".jpg", ".jpeg"},
    "MPO": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "WEBP": {".webp"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
}
CACHE_NAME = ".imblab_verdicts.json"
_CACHE_VERSION = 1
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class Verdict:
    """What validation found about one file.

    ``status`` is ``"ok"``, ``"rejected"`` or ``"duplicate"`` (a byte-identical copy of an
    earlier file, see :func:`validate_folder`); ``ok`` is ``status == "ok"``. ``reason`` says why
    a file was rejected, or for an accepted file what loading it does (e.g. ``"CMYK converted to
    RGB; EXIF orientation 6 applied"``; empty when nothing). ``width`` / ``height`` are the size as
    loaded (after EXIF orientation; the header size for a bomb, 0 when unknown), ``format`` the
    real format found in the bytes (whatever the file's name says), ``mode`` the Pillow mode
    before conversion, ``sha256`` the hex digest of the file's bytes (empty if unreadable).
    """

    path: str
    ok: bool
    status: str
    reason: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    format: str = ""
    mode: str = ""


class _Rejected(Exception):
    """Internal: decoding stopped with a rejection reason (and what was known by then)."""

    def __init__(self, reason: str, width: int = 0, height: int = 0, fmt: str = "", mode: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.width = width
        self.height = height
        self.format = fmt
        self.mode = mode


def _sniff(data: bytes) -> str:
    """What non-image bytes look like, for the rejection reason."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "HTML"
    if head.startswith((b"<svg", b"<?xml")):
        return "SVG/XML"
    if head.startswith((b"{", b"[")):
        return "JSON"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:64]):
        return "text"
    return f"unrecognised or unsupported format (first bytes {data[:8].hex()})"


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of a loaded frame (alpha composited on white, 16-bit scaled; module doc)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if mode == "RGB" else im.convert("RGB")


# EXIF orientation tag value -> the transpose that shows the image upright (ImageOps.exif_transpose)
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` turned upright for an EXIF orientation tag (1 or unknown values: unchanged)."""
    op = _ORIENT.get(orientation)
    return im if op is None else im.transpose(op)


def _decode(data: bytes, name: str, max_pixels: int) -> tuple[Image.Image, str, str, str]:
    """Fully decode ``data``: (RGB image, format, original mode, notes); raises _Rejected.

    Order: identify from the bytes, header-only size check against ``max_pixels`` (and Pillow's
    own bomb limit), then decode the first frame, apply EXIF orientation, convert to RGB.
    """
    if not data:
        raise _Rejected("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _Rejected(f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise _Rejected(f"not an image: {_sniff(data)}") from None
    except Exception as err:  # a malformed header can raise anything from a plugin
        raise _Rejected(f"unreadable image header: {type(err).__name__}: {err}") from None
    fmt, mode = str(im.format), im.mode
    width, height = im.size
    if width * height > max_pixels:
        raise _Rejected(
            f"decompression bomb: {width}x{height} = {width * height} pixels > "
            f"max_pixels={max_pixels} (not decoded)",
            width,
            height,
            fmt,
            mode,
        )
    notes = []
    suffix = Path(name).suffix.lower()
    if suffix and suffix not in FORMAT_SUFFIXES[fmt]:
        notes.append(f"{fmt} data behind a {suffix} name")
    try:
        frames = int(getattr(im, "n_frames", 1))
        im.seek(0)
        im.load()
        rgb = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _Rejected(f"decompression bomb: {err}", width, height, fmt, mode) from None
    except Exception as err:  # truncated or corrupt pixel data: any plugin error
        raise _Rejected(
            f"corrupt image data: {type(err).__name__}: {err}", width, height, fmt, mode
        ) from None
    if frames > 1:
        notes.append(f"{frames} frames: first frame used")
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    try:
        orientation = int(im.getexif().get(0x0112, 1))
        rgb = _orient(rgb, orientation)
    except Exception:  # a corrupt EXIF block does not spoil the pixels
        orientation = 1
        notes.append("unreadable EXIF ignored")
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    return rgb, fmt, mode, "; ".join(notes)


def validate_image(
    path: str | Path,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Verdict:
    """Verdict for one file (never raises for a bad file): ``ok`` when it decodes fully and its
    smaller side, after EXIF orientation, is at least ``min_side``; rejected with a reason for an
    unreadable, empty, non-image, truncated or corrupt file, a decompression bomb (more than
    ``max_pixels`` pixels by its header, checked before decoding) or a too small image."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return Verdict(name, False, "rejected", f"unreadable file: {err.strerror or err}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        rgb, fmt, mode, notes = _decode(data, name, max_pixels)
    except _Rejected as rej:
        return Verdict(
            name, False, "rejected", rej.reason, rej.width, rej.height, digest, rej.format, rej.mode
        )
    width, height = rgb.size
    if min(width, height) < min_side:
        reason = f"too small: {width}x{height} (smaller side < min_side={min_side})"
        return Verdict(name, False, "rejected", reason, width, height, digest, fmt, mode)
    return Verdict(name, True, "ok", notes, width, height, digest, fmt, mode)


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image as :func:`validate_image` does and return it as 8-bit RGB (first frame,
    EXIF orientation applied, alpha on white, 16-bit scaled). Raises ``ValueError`` naming the
    file and the reason for a file that validation would reject."""
    try:
        rgb, _, _, _ = _decode(Path(path).read_bytes(), str(path), max_pixels)
    except _Rejected as rej:
        raise ValueError(f"{path}: {rej.reason}") from None
    return rgb


class VerdictCache:
    """Verdicts of a folder's files in one JSON file, keyed by the file's path relative to the
    folder and valid while its (size, mtime_ns) and the validation settings are unchanged.

    The file holds ``{"version", "pillow", "min_side", "max_pixels", "entries": {rel: {"size",
    "mtime_ns", "verdict"}}}``; any other version, Pillow version or setting discards it. Only the
    entries looked up or stored since loading are saved (files gone from the folder drop out).
    ``hits`` / ``misses`` count lookups; ``changed`` says whether saving would change the file.
    """

    def __init__(self, file: str | Path, *, min_side: int, max_pixels: int) -> None:
        self.file = Path(file)
        self._header = {
            "version": _CACHE_VERSION,
            "pillow": Image.__version__,
            "min_side": min_side,
            "max_pixels": max_pixels,
        }
        self._old: dict[str, dict] = {}
        self._new: dict[str, dict] = {}
        self.hits = 0
        self.misses = 0
        try:
            stored = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return
        if isinstance(stored, dict) and all(stored.get(k) == v for k, v in self._header.items()):
            entries = stored.get("entries")
            self._old = entries if isinstance(entries, dict) else {}

    def get(self, rel: str, size: int, mtime_ns: int, path: str) -> Verdict | None:
        """The cached verdict of ``rel`` (reported under ``path``), or None if absent or stale."""
        entry = self._old.get(rel)
        if entry is not None and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            try:
                verdict = Verdict(**{**entry["verdict"], "path": path})
            except (TypeError, KeyError):
                verdict = None
            if verdict is not None:
                self._new[rel] = entry
                self.hits += 1
                return verdict
        self.misses += 1
        return None

    def put(self, rel: str, size: int, mtime_ns: int, verdict: Verdict) -> None:
        """Store the verdict of ``rel`` (its path is not stored: it is ``rel`` under the root)."""
        fields = asdict(verdict)
        del fields["path"]
        self._new[rel] = {"size": size, "mtime_ns": mtime_ns, "verdict": fields}

    @property
    def changed(self) -> bool:
        """True when entries were stored, or stored ones went unused, since loading."""
        return self._new != self._old

    def save(self) -> bool:
        """Write the cache atomically; False (and no error) where the folder is read-only."""
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({**self._header, "entries": self._new}))
            os.replace(tmp, self.file)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True


def image_files(root: str | Path) -> list[Path]:
    """Image files of a class-per-folder tree: files under the class subfolders of ``root``
    (any depth) whose extension is in :data:`IMAGE_EXTENSIONS` (any case), hidden files and
    folders skipped, sorted by their path relative to ``root``."""
    root = Path(root)
    found: list[Path] = []
    for class_dir in root.iterdir():
        if not class_dir.is_dir() or class_dir.name.startswith("."):
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(
                Path(dirpath, f)
                for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
            )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _validate_one(args: tuple[str, int, int]) -> Verdict:
    path, min_side, max_pixels = args
    return validate_image(path, min_side=min_side, max_pixels=max_pixels)


def mark_duplicates(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Verdicts in the same order with every accepted byte-identical copy (same sha256) after the
    first accepted one turned into ``status="duplicate"`` naming the kept file."""
    first: dict[str, str] = {}
    out = []
    for v in verdicts:
        if v.ok and v.sha256 in first:
            v = replace(v, ok=False, status="duplicate", reason=f"duplicate of {first[v.sha256]}")
        elif v.ok:
            first[v.sha256] = v.path
        out.append(v)
    return out


def validate_folder(
    root: str | Path,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    workers: int = 0,
    files: Sequence[Path] | None = None,
) -> tuple[list[Verdict], list[Verdict]]:
    """(accepted, rejected) verdicts of a class-per-folder tree (:func:`image_files` order; each
    ``path`` is ``root/<class>/...``). Exact duplicates, across classes too, are ``"duplicate"``
    in ``rejected``: the first by sorted path is kept. With ``cache`` the verdicts are read from
    and saved to ``root/.imblab_verdicts.json`` (:class:`VerdictCache`), so unchanged files are
    not decoded again; ``workers > 0`` decodes the rest in that many processes. ``files``: the
    files under ``root`` to validate, in that order (default :func:`image_files`)."""
    root = Path(root)
    files = image_files(root) if files is None else list(files)
    store = (
        VerdictCache(root / CACHE_NAME, min_side=min_side, max_pixels=max_pixels) if cache else None
    )
    verdicts: list[Verdict | None] = []
    todo: list[tuple[int, str, int, int]] = []
    for i, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except OSError as err:  # vanished or unreadable since the listing: not cached
            verdicts.append(Verdict(str(path), False, "rejected", f"unreadable file: {err}"))
            continue
        hit = store.get(rel, st.st_size, st.st_mtime_ns, str(path)) if store else None
        verdicts.append(hit)
        if hit is None:
            todo.append((i, rel, st.st_size, st.st_mtime_ns))
    jobs = [(str(files[i]), min_side, max_pixels) for i, *_ in todo]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            fresh = list(
                pool.map(_validate_one, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
            )
    else:
        fresh = [_validate_one(job) for job in jobs]
    for (i, rel, size, mtime_ns), verdict in zip(todo, fresh, strict=True):
        verdicts[i] = verdict
        if store is not None:
            store.put(rel, size, mtime_ns, verdict)
    if store is not None and store.changed:
        store.save()
    marked = mark_duplicates([v for v in verdicts if v is not None])
    return [v for v in marked if v.ok], [v for v in marked if not v.ok]


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name's bytes that are not UTF-8 (which Python holds as
    surrogate escapes, ``os.fsdecode``) become ``\\xNN``; other text is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_rejected_csv(path: str | Path, verdicts: Iterable[Verdict]) -> None:
    """CSV with columns ``path, verdict, reason`` (verdict = status) of the given verdicts, in
    UTF-8 with non-UTF-8 names escaped (:func:`printable`); written to a temporary file renamed
    over ``path``, so the file is always complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "verdict", "reason"])
            for v in verdicts:
                writer.writerow([printable(v.path), v.status, printable(v.reason)])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
