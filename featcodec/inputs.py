"""Reading what users hand to ``featcodec encode/decode``: images, tensors, streams, folders.

Everything that can go wrong with a user's file raises :class:`~codec.errors.InputError`
with a message naming the file and the problem.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featcodec.codec.bitstream import MAX_INPUT_PIXELS
from featcodec.codec.errors import InputError
from featcodec.codec.files import IMAGE_SUFFIXES, TENSOR_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:  # imported where used: collecting files and `featcodec info` need neither
    from torch import Tensor

MAX_FRAMES = 1 << 16


def collect(paths: list[str], suffixes: frozenset[str], what: str) -> list[Path]:
    """Expand folders to their files with ``suffixes`` (sorted); check files exist.

    Files named explicitly are taken whatever their suffix; two inputs that would give the
    same output name are refused.
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"{p}: folder holds no {what} ({', '.join(sorted(suffixes))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"no such file or folder: {p}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise InputError(f"{stems[f.stem]} and {f} would write the same output name")
        stems[f.stem] = f
    return files


def refuse_existing(targets: list[Path], overwrite: bool) -> None:
    """Refuse to replace an existing output file unless ``overwrite`` (``--overwrite``)."""
    if not overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t} exists (use --overwrite to replace it)")


def load_image(path: Path) -> Tensor:
    """RGB image ``(3, H, W)`` float32 in [0, 1], read faithfully; images over
    :data:`~codec.bitstream.MAX_INPUT_PIXELS` are refused before they are decoded.

    8-bit images (grey, palette, RGB, CMYK, ...) are scaled by 1/255; 16-bit images (grey
    ``I;16``, and 32-bit integer ``I`` images, taken as 16-bit) by 1/65535; float images
    (``F``) are taken as they are and must lie in [0, 1]. Grey becomes three equal channels.
    An alpha channel (or a palette's transparency) is composited over black: each colour is
    multiplied by its alpha.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_INPUT_PIXELS:
                raise InputError(
                    f"{path}: {w}×{h} pixels is over the limit of {MAX_INPUT_PIXELS:,} pixels "
                    "(code it in tiles)"
                )
            array = _rgb_array(im, path)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        reason = "not an image" if isinstance(e, UnidentifiedImageError) else str(e)
        raise InputError(f"{path}: cannot read as an image ({reason})") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def _rgb_array(im: Any, path: Path) -> Any:
    """``im`` (a PIL image) as an ``(H, W, 3)`` float32 array in [0, 1] (rules: see
    :func:`load_image`)."""
    import numpy as np

    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(im, dtype=np.float64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise InputError(f"{path}: integer image values outside 0..65535")
        grey = (grey / 65535.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        if not np.isfinite(grey).all() or (grey.size and (grey.min() < 0 or grey.max() > 1)):
            raise InputError(f"{path}: float image values outside [0, 1] (or not finite)")
        return np.repeat(grey[..., None], 3, axis=-1)
    transparent = "A" in im.getbands() or "transparency" in im.info
    if transparent:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]  # over black
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_tensor(path: Path) -> Tensor:
    """A feature tensor from ``.pt`` (a saved tensor) or ``.npy`` (a numeric array)."""
    import numpy as np
    import torch

    try:
        if path.suffix.lower() == ".npy":
            value = np.load(path, allow_pickle=False)
            if not np.issubdtype(value.dtype, np.number):
                raise InputError(f"{path}: array of {value.dtype} is not numeric")
            return torch.from_numpy(np.ascontiguousarray(value))
        value = torch.load(path, map_location="cpu", weights_only=True)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to deserialize is a bad input file
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read as a tensor ({reason})") from None
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{path}: holds a {type(value).__name__}, expected a tensor")
    return value


def load_input(path: Path) -> tuple[str, Tensor]:
    """``("features", tensor)`` for ``.pt``/``.npy`` files, else ``("image", tensor)``."""
    if path.suffix.lower() in TENSOR_SUFFIXES:
        return "features", load_tensor(path)
    return "image", load_image(path)


def to_png(image: Tensor) -> bytes:
    """PNG bytes of an image ``(3, H, W)`` with values in [0, 1] (clamped), or of a ``uint8``
    map ``(1, H, W)`` (a class mask) as an 8-bit grey PNG of its values."""
    import torch
    from PIL import Image

    if image.dtype == torch.uint8:
        array = image[0].cpu().numpy()
    else:
        rgb = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        array = rgb.cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _same_size(frames: list[Tensor], names: list[str]) -> Tensor:
    import torch

    for name, frame in zip(names, frames, strict=True):
        if frame.shape != frames[0].shape:
            h0, w0 = frames[0].shape[-2:]
            h, w = frame.shape[-2:]
            raise InputError(
                f"{name} is {w}×{h}, the first frame ({names[0]}) {w0}×{h0}: every frame of a "
                "sequence must have the same size"
            )
    return torch.stack(frames)


def load_video(path: Path) -> Tensor:
    """Every frame of a video file (OpenCV's FFmpeg reader) as ``(T, 3, H, W)`` in [0, 1]."""
    import cv2
    import numpy as np
    import torch

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"{path}: cannot open as a video (unknown container or codec)")
        frames: list[Tensor] = []
        while len(frames) < MAX_FRAMES:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(bgr[..., ::-1], dtype=np.float32) / 255.0
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
    finally:
        capture.release()
    if not frames:
        raise InputError(f"{path}: the video holds no readable frame")
    return _same_size(frames, [f"{path} frame {i}" for i in range(len(frames))])


def load_frames(path: Path) -> Tensor:
    """A sequence ``(T, 3, H, W)`` in [0, 1]: the images of a folder in natural order
    (``2.png`` before ``10.png``), or the frames of a video file."""
    from featcodec.training.datasets.files import natural_key

    if path.is_dir():
        files = [f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise InputError(
                f"{path}: folder holds no frames ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        if len(files) > MAX_FRAMES:
            raise InputError(f"{path}: {len(files)} frames, a sequence holds at most {MAX_FRAMES}")
        files.sort(key=lambda f: natural_key(f.name))
        return _same_size([load_image(f) for f in files], [str(f) for f in files])
    if not path.is_file():
        raise InputError(f"no such file or folder: {path}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"{path}: not a folder of frames or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return load_video(path)
