"""Build small Kaggle "Classify Leaves" style folders and special image files for the tests.

A competition folder is `train.csv` (image,label), `test.csv` (image),
`sample_submission.csv` (image,label) and `images/N.jpg`, with N counting train images first and
test images after them, as in the real competition.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Deliberately not in sorted order, so tests can check that classes come out sorted.
SPECIES = [
    "quercus_rubra",
    "acer_rubrum",
    "magnolia_grandiflora",
    "betula_nigra",
    "tilia_americana",
    "ulmus_americana",
    "juglans_nigra",
    "carya_ovata",
]
EXIF_ORIENTATION = 0x0112


@dataclass
class Competition:
    """What `write_competition` wrote (paths are absolute)."""

    root: Path
    train: list[tuple[str, str]] = field(default_factory=list)  # (image, label) rows
    test: list[str] = field(default_factory=list)  # image rows

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.root / "test.csv"

    @property
    def sample_csv(self) -> Path:
        return self.root / "sample_submission.csv"

    @property
    def classes(self) -> list[str]:
        return sorted({label for _, label in self.train})


# --------------------------------------------------------------------------------------------
# CSV helpers


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Write a CSV with "\\n" line endings (so that line numbers are easy to count)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def csv_line_of(path: Path, image: str) -> int:
    """The 1-based line number (header = line 1) of the first row whose first cell is `image`."""
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if number > 1 and line.split(",")[0].strip() == image:
            return number
    raise AssertionError(f"{image!r} not in {path}")


# --------------------------------------------------------------------------------------------
# Image content


def distinct_image(index: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A solid colour that depends on `index`, with a shape whose kind/place depend on it too."""
    rng = np.random.default_rng(index)
    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    foreground = tuple(255 - v for v in background)
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    offset = index % max(1, size // 4)
    box = (offset, offset, offset + size // 2, offset + size // 2)
    if index % 2:
        draw.ellipse(box, fill=foreground)
    else:
        draw.rectangle(box, fill=foreground)
    return img.convert(mode) if mode != "RGB" else img


def jpeg_bytes(img: Image.Image, quality: int = 90, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality, **save_kwargs)
    return buffer.getvalue()


def write_jpeg(path: Path, index: int = 0, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(distinct_image(index, size)))
    return path


def write_competition(
    root: Path,
    n_classes: int = 3,
    per_class: int = 6,
    n_test: int = 4,
    size: int = 32,
    *,
    sample_submission: bool = True,
    image_col: str = "image",
    label_col: str = "label",
) -> Competition:
    """Write a small valid competition folder under `root` (created if needed).

    Train rows interleave the classes (class of row i is i % n_classes), so labels are not in
    sorted order in the file either. Every image is a distinct JPEG.
    """
    assert n_classes <= len(SPECIES)
    root.mkdir(parents=True, exist_ok=True)
    comp = Competition(root=root)
    n_train = n_classes * per_class
    for i in range(n_train):
        image = f"images/{i}.jpg"
        write_jpeg(root / image, index=i, size=size)
        comp.train.append((image, SPECIES[i % n_classes]))
    for i in range(n_train, n_train + n_test):
        image = f"images/{i}.jpg"
        write_jpeg(root / image, index=i, size=size)
        comp.test.append(image)
    write_csv(comp.train_csv, [image_col, label_col], comp.train)
    write_csv(comp.test_csv, [image_col], [[image] for image in comp.test])
    if sample_submission:
        write_csv(
            comp.sample_csv, [image_col, label_col], [[image, SPECIES[0]] for image in comp.test]
        )
    return comp


# --------------------------------------------------------------------------------------------
# Broken files


def write_truncated_jpeg(path: Path, size: int = 64) -> Path:
    """The first half of a valid JPEG's bytes (noise, so half the file is inside the scan)."""
    noise = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    data = jpeg_bytes(Image.fromarray(noise), quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_file(path: Path) -> Path:
    """A text file (usually given an image's name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image\n" * 20, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Images in unusual modes (all valid: the pipeline must accept them)


def write_grayscale(path: Path, size: int = 32, value: int = 100) -> Path:
    """Mode 'L': a uniform `value` with a brighter square (JPEG or PNG by suffix)."""
    img = Image.new("L", (size, size), value)
    ImageDraw.Draw(img).rectangle((size // 4, size // 4, size // 2, size // 2), fill=220)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_rgba(path: Path, size: int = 32, colour=(200, 30, 40)) -> Path:
    """PNG 'RGBA': left half opaque `colour`, right half fully transparent black."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((0, 0, size // 2 - 1, size - 1), fill=(*colour, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def write_palette(path: Path, size: int = 32, transparency: bool = True) -> Path:
    """PNG 'P': index 0 = black (transparent if `transparency`), 1 = green, 2 = blue.

    Top half is index 0, bottom-left index 1, bottom-right index 2.
    """
    img = Image.new("P", (size, size), 0)
    palette = [0, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * (256 - 3) * 3
    img.putpalette(palette)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, size // 2, size // 2 - 1, size - 1), fill=1)
    draw.rectangle((size // 2, size // 2, size - 1, size - 1), fill=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if transparency:
        img.save(path, format="PNG", transparency=0)
    else:
        img.save(path, format="PNG")
    return path


def write_cmyk_jpeg(path: Path, size: int = 32, cmyk=(0, 255, 255, 0)) -> Path:
    """A 'CMYK' JPEG of one colour (default: pure red)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (size, size), cmyk).save(path, format="JPEG", quality=95)
    return path


def write_16bit_png(path: Path, width: int = 64, height: int = 16, top: int = 65535) -> Path:
    """A 16-bit grayscale PNG ('I;16'): a horizontal gradient from 0 to `top`."""
    row = np.linspace(0, top, width).round().astype(np.uint16)
    array = np.tile(row, (height, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def write_exif_rotated_jpeg(path: Path, width: int = 40, height: int = 20) -> Path:
    """A JPEG whose stored pixels are width × height, with EXIF orientation 6 (rotate 90° CW).

    Stored left half is red and right half blue; displayed (rotated), the image is
    height wide and width tall, with red on top and blue at the bottom.
    """
    img = Image.new("RGB", (width, height), (0, 0, 255))
    ImageDraw.Draw(img).rectangle((0, 0, width // 2 - 1, height - 1), fill=(255, 0, 0))
    exif = img.getexif()
    exif[EXIF_ORIENTATION] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=95, exif=exif)
    return path


def write_large_jpeg(path: Path, width: int = 1024, height: int = 768) -> Path:
    """A smooth colour gradient JPEG, big enough for reduced-scale (draft) decoding."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    array = np.stack(
        np.broadcast_arrays(x[None, :], y[:, None], (x[None, :] + y[:, None]) / 2), axis=-1
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=85)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid 1-bit grayscale PNG of width × height, all black: a few hundred KB at most.

    Written by hand (a streamed zlib of zero rows) so that building it never holds the image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)]
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
