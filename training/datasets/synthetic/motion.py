"""Motion in the synthetic clips: the camera, each shape's own motion, and the backward flow.

Frame ``t`` of a clip places shape ``k`` and the background by::

    shape k at frame t:   T_k(t) = C(t) · P_k(t)        canonical outline, unit circumradius
    background at t:      T_bg(t) = C(t) · Translate(image centre)

``C(t)`` is the camera (frame 0 → frame t, ``C(0) = I``), a random similarity per frame about
the image centre; ``P_k(t)`` places shape ``k`` (centre, apparent radius, rotation) at time
``t``, moved by its own constant per-frame similarity (:class:`ShapeMotion`).

Backward flow of frame ``t``: a pixel ``p`` showing surface ``s`` shows the canonical point
``q = T_s(t)⁻¹ p``, which was at ``p' = T_s(t−1) q`` in frame ``t − 1``; ``flow = p' − p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featcodec.training.datasets.synthetic.geometry import (
    inverse_affine,
    pixel_centres,
    similarity,
)
from featcodec.training.datasets.synthetic.seeds import TAG_MOTION, lerp, rng


@dataclass(frozen=True, eq=False)
class ShapeMotion:
    """Per-frame motion of a shape about its own centre: translation ``(2,)`` in pixels,
    rotation in radians and scale factor."""

    translation: np.ndarray
    rotation: float
    scale: float


def sample_motion(
    seed: int, num_frames: int, num_shapes: int, size: tuple[int, int], camera: bool, shapes: bool
) -> tuple[np.ndarray, list[ShapeMotion | None]]:
    """Cumulative camera ``(T, 3, 3)`` (frame 0 → frame t) and per-shape motions."""
    h, w = size
    u = rng(seed, TAG_MOTION).random(4 * num_frames + 4 * num_shapes)
    uc, us = u[: 4 * num_frames].reshape(-1, 4), u[4 * num_frames :].reshape(-1, 4)
    centre = np.array([0.5 * w, 0.5 * h])
    to_centre = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, 1.0]])
    cams = np.empty((num_frames, 3, 3))
    cams[0] = np.eye(3)
    for t in range(1, num_frames):
        angle = math.radians(lerp(uc[t, 0], -2.0, 2.0))
        scale = lerp(uc[t, 1], 0.98, 1.02)
        shift = lerp(uc[t, 2:4], -3.0, 3.0)
        step = similarity(scale, angle, centre + shift) @ to_centre if camera else np.eye(3)
        cams[t] = step @ cams[t - 1]
    motions: list[ShapeMotion | None] = [
        ShapeMotion(
            lerp(us[k, :2], -2.0, 2.0),
            math.radians(lerp(us[k, 2], -3.0, 3.0)),
            float(lerp(us[k, 3], 0.97, 1.03)),
        )
        if shapes
        else None
        for k in range(num_shapes)
    ]
    return cams, motions


def backward_flow(instances: np.ndarray, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Backward flow ``(2, H, W)`` of a frame with ``instances`` ``(H, W)``; ``current`` and
    ``previous`` ``(n + 1, 3, 3)`` map each surface's canonical frame (0 background, k + 1
    shape k) to pixels in this frame and the previous one."""
    h, w = instances.shape
    # Per surface, p ↦ T(t−1) T(t)⁻¹ p − p as a (2, 3) matrix acting on (x, y, 1).
    inverse = np.stack([inverse_affine(a) for a in current])
    disp = (previous @ inverse)[:, :2] - np.eye(3)[:2]
    flow = np.empty((2, h * w))
    y, x = np.meshgrid(pixel_centres(h), pixel_centres(w), indexing="ij")
    points = np.stack([x.reshape(-1), y.reshape(-1), np.ones(h * w)])
    ids = instances.reshape(-1)
    for s in np.flatnonzero(np.bincount(ids)).tolist():
        sel = ids == s
        flow[:, sel] = np.einsum("ij,jn->in", disp[s], points[:, sel])
    return flow.astype(np.float32).reshape(2, h, w)
