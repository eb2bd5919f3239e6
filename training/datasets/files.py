"""Reading the files of an on-disk dataset, with one-line errors.

The real-data datasets (``imagefolder``, ``coco``, ``cityscapes``, ``video_frames``) find their
folders, files and images through these helpers, so that everything a user can get wrong on
disk (a missing folder or file, an empty folder, a file that is not an image) raises
``codec.errors.InputError`` with a one-line message of the form ``"<path>: <problem>"``.

Image files are recognised by the suffixes torchvision's ``ImageFolder`` accepts
(``IMAGE_SUFFIXES``, case-insensitive); names starting with ``.`` are ignored everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from featcodec.codec.errors import InputError
from featcodec.codec.files import IMAGE_SUFFIXES

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders the digit runs in ``name`` by value: ``2.png`` before ``10.png``,
    ``clip9`` before ``clip10``. Text compares case-insensitively; the name itself breaks ties,
    so the order is total."""
    parts = _DIGITS.split(name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in parts)
    return (*key, name)


def one_line(error: BaseException) -> str:
    """``str(error)`` on a single line (PIL and json messages may span several)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is a folder; otherwise ``InputError`` naming it as ``what``
    (e.g. ``"dataset root"``)."""
    p = Path(path)
    if not p.is_dir():
        problem = "is not a folder" if p.exists() else "not found"
        raise InputError(f"{p}: {what} {problem}")
    return p


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is a file; otherwise ``InputError`` naming it as ``what``
    (e.g. ``"annotation file"``)."""
    p = Path(path)
    if not p.is_file():
        problem = "is not a file" if p.exists() else "not found"
        raise InputError(f"{p}: {what} {problem}")
    return p


def visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` whose names do not start with ``.``, in natural order."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_name_key)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, see ``IMAGE_SUFFIXES``), naturally
    sorted: ``1.png, 2.png, 10.png``."""
    return [p for p in visible_entries(folder) if p.is_file() and is_image_name(p.name)]


def is_image_name(name: str) -> bool:
    """Whether ``name`` has an image suffix and is not hidden."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _name_key(p: Path) -> tuple:
    return natural_key(p.name)


def open_image(path: str | Path) -> Image.Image:
    """The decoded PIL image at ``path`` (any mode; pixels loaded, file closed). A missing
    file or one PIL cannot decode raises ``InputError``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    try:
        with Image.open(p) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = "not an image" if isinstance(e, UnidentifiedImageError) else one_line(e)
        raise InputError(f"{p}: cannot read as an image ({reason})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of the image at ``path`` from its header only (nothing is decoded)."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            w, h = im.size
    except FileNotFoundError:
        raise InputError(f"{p}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = "not an image" if isinstance(e, UnidentifiedImageError) else one_line(e)
        raise InputError(f"{p}: cannot read as an image ({reason})") from None
    return h, w


def to_float_rgb(image: Image.Image) -> Tensor:
    """A PIL image as an RGB tensor ``(3, H, W)``, float32 in [0, 1] (grey, palette and RGBA
    images are converted to RGB first)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_rgb(path: str | Path) -> Tensor:
    """The image file at ``path`` as ``(3, H, W)`` float32 in [0, 1]."""
    return to_float_rgb(open_image(path))


def read_array(path: str | Path) -> np.ndarray:
    """The pixels of a single-channel image file (a label map, a 16-bit disparity map) as an
    ``(H, W)`` array of their stored integer type, with no conversion."""
    image = open_image(path)
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"{path}: expected a single-channel image, got mode {image.mode}")
    return array
