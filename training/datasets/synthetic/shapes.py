"""Canonical outlines of the synthetic shapes: inside tests, keypoints, boxes and amodal masks.

Every shape lives in its own *canonical frame*: a circle or a star-shaped polygon around the
origin with unit circumradius (radial function ``r(φ)`` in :func:`outline_radius`), placed in
the image by an affine map ``T`` (canonical → pixel coordinates).

* For speed, the inside test writes each polygon as a union of overlapping convex pieces,
  whose half-plane values are linear in the pixel coordinates: broadcast sums, no
  trigonometry, and only over the pixels of the shape's box.
* Pixel ``(i, j)`` has centre ``(x, y) = (j + 0.5, i + 0.5)``; it belongs to a shape if its
  centre is inside (no anti-aliasing).
* Boxes are the amodal extent of the analytic outline (polygon vertices or ellipse).
  Keypoints are the centre and the outline points on the rays at the shape's rotation +
  k·90°.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from featcodec.training.datasets.synthetic.geometry import (
    SizeLike,
    as_size,
    inverse_affine,
    pixel_centres,
)

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Shape classes; a class index is the position in this tuple."""

NUM_KEYPOINTS = 5
"""Centre plus the outline points on rays at rotation + 0°, 90°, 180°, 270°."""


@dataclass(frozen=True)
class _Polygon:
    """A star-shaped polygon around the origin, vertices ``(m, 2)`` sorted by angle in
    ``(−π, π]``. Edge ``e`` runs from vertex ``e`` to ``e + 1`` and covers the angular sector
    starting at ``angles[e]``; its inner side is ``ux[e]·x + uy[e]·y < 1``."""

    vertices: np.ndarray
    angles: np.ndarray
    ux: np.ndarray
    uy: np.ndarray


def _polygon(vertices: np.ndarray) -> _Polygon:
    angles = np.arctan2(vertices[:, 1], vertices[:, 0])
    order = np.argsort(angles)
    v = vertices[order]
    d = np.roll(v, -1, axis=0) - v
    normals = np.stack([d[:, 1], -d[:, 0]], axis=1)  # outward for counter-clockwise order
    offsets = (normals * v).sum(axis=1)
    assert np.all(offsets > 0), "the origin must be strictly inside"
    u = normals / offsets[:, None]
    return _Polygon(v, angles[order], u[:, 0].copy(), u[:, 1].copy())


def _regular(m: int, start_deg: float, radii: Sequence[float] = (1.0,)) -> np.ndarray:
    k = np.arange(m)
    a = np.deg2rad(start_deg) + 2.0 * np.pi * k / m
    r = np.asarray(radii, dtype=np.float64)[k % len(radii)]
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross_vertices(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    arm = math.sqrt(1.0 - w * w)  # outer corners on the unit circle
    quarter = np.array([[arm, -w], [arm, w], [w, w]])
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    parts = [quarter @ np.linalg.matrix_power(rot, k).T for k in range(4)]
    return np.concatenate(parts, axis=0)


_POLYGONS: dict[int, _Polygon] = {
    1: _polygon(_regular(4, 45.0)),  # square, axis aligned at rotation 0
    2: _polygon(_regular(3, -90.0)),  # triangle, apex up (image y points down)
    3: _polygon(_regular(10, -90.0, (1.0, 0.42))),  # five-pointed star, tip up
    4: _polygon(_cross_vertices()),  # plus-shaped cross
}


def outline_vertices(cls: int) -> np.ndarray:
    """Vertices ``(m, 2)`` of the canonical outline of class ``cls``, by angle; ``(0, 2)`` for
    the circle. All outlines have unit circumradius and are centred at the origin."""
    if cls == 0:
        return np.zeros((0, 2))
    return _POLYGONS[cls].vertices.copy()


def _convex_rows(vertices: np.ndarray) -> np.ndarray:
    """Half-planes ``(m, 3)`` of a convex polygon (vertices counter-clockwise): rows
    ``(a_x, a_y, −c)`` with ``a·q − c < 0`` on the inner side of each edge."""
    d = np.roll(vertices, -1, axis=0) - vertices
    normals = np.stack([d[:, 1], -d[:, 0]], axis=1)  # outward for counter-clockwise order
    offsets = (normals * vertices).sum(axis=1)
    rows = np.concatenate([normals, -offsets[:, None]], axis=1)
    # Convex and counter-clockwise: every vertex is on the inner (or boundary) side of all.
    homogeneous = np.concatenate([vertices, np.ones((len(vertices), 1))], axis=1)
    assert np.all(homogeneous @ rows.T < 1e-12), "pieces must be convex, counter-clockwise"
    return rows / np.abs(rows[:, :2]).sum(axis=1, keepdims=True)


def _convex_pieces(cls: int) -> np.ndarray:
    """The outline of class ``cls`` as a union of overlapping convex pieces, ``(p, h, 3)``
    half-plane rows (see ``_convex_rows``). Pieces overlap across their internal boundaries,
    so no pixel centre can fall into a crack between them."""
    v = _POLYGONS[cls].vertices
    if cls in (1, 2):  # square, triangle: convex already
        return _convex_rows(v)[None]
    if cls == 3:  # star: one kite per tip, reaching a little past the centre
        tips = np.flatnonzero(np.hypot(v[:, 0], v[:, 1]) > 0.99)
        kites = []
        for t in tips:
            before, after = v[t - 1], v[(t + 1) % len(v)]
            back = -0.1 * v[t]  # inside the inner pentagon, opposite the tip
            kites.append(_convex_rows(np.stack([back, before, v[t], after])))
        return np.stack(kites)
    if cls == 4:  # cross: a horizontal and a vertical bar
        arm, w = v[:, 0].max(), abs(v[np.argmax(v[:, 0]), 1])
        bar = np.array([[-arm, -w], [arm, -w], [arm, w], [-arm, w]])
        return np.stack([_convex_rows(bar), _convex_rows(bar[:, ::-1][::-1])])
    raise ValueError(f"unknown polygon class {cls}")


_PIECES: dict[int, np.ndarray] = {c: _convex_pieces(c) for c in _POLYGONS}


def _inside(cls: int, to_canonical: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether homogeneous points ``(3, N)`` (of a frame that ``to_canonical`` (3, 3) maps to
    the canonical frame) are strictly inside the class-``cls`` outline; bool ``(N,)``.

    A point is inside if it is inside any convex piece, i.e. on the inner side of all of that
    piece's half-planes: ``min_p max_h (A_ph · T⁻¹ p) < 0`` — a single product of the
    pixel coordinates with a small matrix, no trigonometry.
    """
    if cls == 0:
        q = np.einsum("ij,jn->in", to_canonical[:2], points)
        q *= q
        return q[0] + q[1] < 1.0
    pieces = _PIECES[cls]
    p, h, _ = pieces.shape
    values = np.einsum("rj,jn->rn", pieces.reshape(p * h, 3) @ to_canonical, points)
    if p == 1:
        return values.max(axis=0) < 0.0
    return values.reshape(p, h, -1).max(axis=1).min(axis=0) < 0.0


def inside_grid(cls: int, to_canonical: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``_inside`` on the grid of points ``(x[j], y[i])`` (``x`` (W,), ``y`` (H,)); bool
    ``(H, W)``. Every half-plane value is linear in ``(x, y)``, so it is one broadcast sum of
    a row term and a column term per half-plane."""
    if cls == 0:
        a = to_canonical
        qx = np.add.outer(a[0, 1] * y + a[0, 2], a[0, 0] * x)
        qy = np.add.outer(a[1, 1] * y + a[1, 2], a[1, 0] * x)
        qx *= qx
        qy *= qy
        qx += qy
        return qx < 1.0
    pieces = _PIECES[cls]
    p, h, _ = pieces.shape
    m = pieces.reshape(p * h, 3) @ to_canonical
    rows = np.multiply.outer(m[:, 1], y)
    rows += m[:, 2:3]
    values = rows[:, :, None] + np.multiply.outer(m[:, 0], x)[:, None, :]  # (p·h, H, W)
    if p == 1:
        return values.max(axis=0) < 0.0
    return values.reshape(p, h, len(y), len(x)).max(axis=1).min(axis=0) < 0.0


def outline_inside(cls: int, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Whether canonical points ``(qx, qy)`` (arrays of one shape) are strictly inside the
    outline of class ``cls``; a bool array of that shape."""
    qx, qy = np.broadcast_arrays(np.asarray(qx, np.float64), np.asarray(qy, np.float64))
    points = np.stack([qx.reshape(-1), qy.reshape(-1), np.ones(qx.size)])
    return _inside(cls, np.eye(3), points).reshape(qx.shape)


def outline_radius(cls: int, angles: np.ndarray | float) -> np.ndarray:
    """Radial function ``r(φ)``: distance from the origin to the outline of class ``cls``
    along rays at ``angles`` (radians, any shape). Independent of ``outline_inside``: a
    point ``ρ·(cos φ, sin φ)`` is inside iff ``ρ < r(φ)``."""
    angles = np.asarray(angles, dtype=np.float64)
    if cls == 0:
        return np.ones_like(angles)
    poly = _POLYGONS[cls]
    phi = np.arctan2(np.sin(angles), np.cos(angles))  # wrap to (−π, π]
    edge = np.searchsorted(poly.angles, phi, side="right") - 1  # −1 wraps to the last edge
    return 1.0 / (poly.ux[edge] * np.cos(phi) + poly.uy[edge] * np.sin(phi))


def _canonical_keypoints() -> np.ndarray:
    """Canonical keypoints (classes, 5, 2): the centre and r(φ)·(cos φ, sin φ), φ = k·90°."""
    quarter = np.arange(4) * (0.5 * np.pi)
    unit = np.stack([np.cos(quarter), np.sin(quarter)], axis=1)
    table = np.zeros((len(SHAPE_CLASSES), NUM_KEYPOINTS, 2))
    for c in range(len(SHAPE_CLASSES)):
        table[c, 1:] = outline_radius(c, quarter)[:, None] * unit
    return table


CANONICAL_KEYPOINTS = _canonical_keypoints()
"""Keypoints ``(classes, NUM_KEYPOINTS, 2)`` of every class's canonical outline."""


def amodal_mask(cls: int, transform: np.ndarray | Tensor, size: SizeLike) -> np.ndarray:
    """Pixels ``(H, W)`` (bool) whose centres lie inside the whole outline of a class-``cls``
    shape placed by ``transform`` ``(2, 3)`` (canonical → pixel coordinates), ignoring
    occlusion."""
    h, w = as_size(size)
    inv = inverse_affine(np.asarray(transform, dtype=np.float64))
    return inside_grid(cls, inv, pixel_centres(w), pixel_centres(h))


_VERTEX_LISTS: dict[int, list[list[float]]] = {c: p.vertices.tolist() for c, p in _POLYGONS.items()}


def outline_box(cls: int, a: np.ndarray) -> tuple[float, float, float, float]:
    """Analytic (unclipped) xyxy box of the class-``cls`` outline placed by ``a`` (3, 3)."""
    (a00, a01, a02), (a10, a11, a12) = a[:2].tolist()
    if cls == 0:  # the unit circle maps to an ellipse
        hx, hy = math.hypot(a00, a01), math.hypot(a10, a11)
        return a02 - hx, a12 - hy, a02 + hx, a12 + hy
    vertices = _VERTEX_LISTS[cls]  # a handful of points: Python floats beat numpy here
    xs = [a00 * vx + a01 * vy for vx, vy in vertices]
    ys = [a10 * vx + a11 * vy for vx, vy in vertices]
    return min(xs) + a02, min(ys) + a12, max(xs) + a02, max(ys) + a12
