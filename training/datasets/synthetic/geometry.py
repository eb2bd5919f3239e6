"""Plane geometry of the synthetic scenes: affine maps and the pixel grid.

Every surface is placed in the image by an affine map ``T`` (canonical → pixel coordinates),
held as a (3, 3) homogeneous matrix; a similarity ``scale · R(angle) + translation`` places a
shape or moves the camera. Pixel ``(i, j)`` has centre ``(x, y) = (j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

SizeLike = int | tuple[int, int] | Sequence[int]
"""An image size: ``H`` (a square image) or ``(H, W)``."""

IDENTITY = np.eye(3)
"""The identity (3, 3) affine map (read-only)."""
IDENTITY.flags.writeable = False


def as_size(size: SizeLike) -> tuple[int, int]:
    """``size`` as ``(H, W)``; both must be positive."""
    if isinstance(size, int | np.integer):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def similarity(scale: float, angle: float, translation: np.ndarray) -> np.ndarray:
    """The (3, 3) map ``q ↦ scale · R(angle) q + translation``."""
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, translation[0]], [s, c, translation[1]], [0.0, 0.0, 1.0]])


def inverse_affine(a: np.ndarray) -> np.ndarray:
    """Inverse (3, 3) of an affine map given as (2, 3) or (3, 3)."""
    (a00, a01, a02), (a10, a11, a12) = a[:2].tolist()
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    return np.array(
        [
            [i00, i01, -(i00 * a02 + i01 * a12)],
            [i10, i11, -(i10 * a02 + i11 * a12)],
            [0.0, 0.0, 1.0],
        ]
    )


@functools.lru_cache(maxsize=32)
def pixel_centres(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``(n,)``: ``j + 0.5`` (read-only)."""
    c = np.arange(n) + 0.5
    c.flags.writeable = False
    return c
