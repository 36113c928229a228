"""Folders of images as rows: each PNG/JPEG becomes C·H·W pixels in [0, 1] (value / 255),
resized to the bundle's (H, W) and converted to its mode (L = 1 channel, RGB = 3). Pillow,
no torch. Also writes reconstructions and per-pixel energy maps as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeserve.atomic import atomic_path
from aeserve.errors import BackendUnavailable, InputError

__all__ = ["IMAGE_SUFFIXES", "image_files", "load_images", "image_shape_of", "save_image", "is_image_dir"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise BackendUnavailable("image folders need Pillow: pip install 'aeserve[images]'") from None
    return Image


def image_files(folder: str | Path) -> list[Path]:
    """The folder's PNG/JPEG files, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def is_image_dir(path: str | Path) -> bool:
    """True for a directory that holds images."""
    return Path(path).is_dir() and bool(image_files(path))


def image_shape_of(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) for images like ``path``: 1 channel for grey images, else 3; its size unless given."""
    image = _open(path)
    channels = 1 if image.mode in ("L", "LA", "I", "I;16", "1", "F") else 3
    width, height = image.size
    return (channels, *(size or (height, width)))


def _open(path: Path):
    Image = _pil()
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc})") from None
    return image


def load_images(paths: Sequence[Path], shape: Sequence[int]) -> np.ndarray:
    """Rows (len(paths), C·H·W) float32 in [0, 1], channel-major like the model's (C, H, W)."""
    Image = _pil()
    channels, height, width = shape
    rows = np.empty((len(paths), channels * height * width), dtype=np.float32)
    for i, path in enumerate(paths):
        image = _open(path).convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
        rows[i] = (pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)).reshape(-1)
    return rows


def save_image(path: str | Path, pixels: np.ndarray, shape: Sequence[int]) -> None:
    """Write one row of pixels in [0, 1] (C·H·W) as a PNG, atomically."""
    Image = _pil()
    channels, height, width = shape
    array = np.clip(np.asarray(pixels).reshape(channels, height, width), 0.0, 1.0)
    array = (array[0] if channels == 1 else array.transpose(1, 2, 0)) * 255.0
    with atomic_path(path) as tmp:
        Image.fromarray(array.round().astype(np.uint8)).save(tmp, format="PNG")
