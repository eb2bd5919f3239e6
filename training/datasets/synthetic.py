"""Procedurally generated, seeded, deterministic synthetic scenes and short clips.

A scene is a textured background plus 1–4 shapes from ``SHAPE_CLASSES``. Every surface lives in
its own *canonical frame* and is placed in the image by an affine map ``T`` (canonical → pixel
coordinates), so any frame of any clip is rendered by mapping each pixel centre back with
``T⁻¹`` and evaluating the surface there::

    shape k at frame t:   T_k(t) = C(t) · P_k(t)        canonical outline, unit circumradius
    background at t:      T_bg(t) = C(t) · Translate(image centre)

``C(t)`` is the camera (frame 0 → frame t, ``C(0) = I``) and ``P_k(t)`` places shape ``k``
(centre, apparent radius, rotation) at time ``t``. Everything below follows from that:

* Outlines are a circle or star-shaped polygons around the origin (radial function ``r(φ)``
  in ``outline_radius``). For speed, the inside test writes each polygon as a union of
  overlapping convex pieces, whose half-plane values are linear in the pixel coordinates:
  broadcast sums, no trigonometry, and only over the pixels of the shape's box.
* Textures are functions of continuous canonical coordinates (a colour gradient plus three
  sinusoid gratings), so a surface looks the same under any affine map. On a pixel grid they
  separate into row and column factors (``Texture.evaluate_grid``). Shape colours are random,
  independent of the class.
* Perspective: physical size ``s ∈ [0.6, 1.2]``, depth ``z ∈ [2, 5.9]``, apparent circumradius
  ``R = f·s/z`` with ``f = 0.5·min(H, W)``. The background is a ground-plane-like depth in
  ``[6, 10]`` (inverse depth linear in the image), always farther than every shape.
* Pixel ``(i, j)`` has centre ``(x, y) = (j + 0.5, i + 0.5)``; it belongs to a shape if its
  centre is inside (no anti-aliasing), shapes are painted far to near.
* Boxes are the amodal extent of the analytic outline (polygon vertices or ellipse), clipped to
  the image, in the same continuous coordinates, rounded outwards to 1/1024 px (exact in
  float32, so a box never shrinks). Keypoints are the centre and the outline points on the
  rays at the shape's rotation + k·90°.
* Backward flow of frame ``t``: a pixel ``p`` showing surface ``s`` shows the canonical point
  ``q = T_s(t)⁻¹ p``, which was at ``p' = T_s(t−1) q`` in frame ``t − 1``; ``flow = p' − p``.

Everything is derived from ``numpy.random.Generator(PCG64(SeedSequence([seed, ...])))``; the
same ``(seed, size)`` always gives the same scene, and frame 0 of ``render_clip(seed)`` is
``render_scene(seed)``.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Shape classes; a class index is the position in this tuple."""

NUM_KEYPOINTS = 5
"""Centre plus the outline points on rays at rotation + 0°, 90°, 180°, 270°."""

# Seed-sequence tags keep the random streams for different purposes apart.
_TAG_LAYOUT = 0x5CE7E
_TAG_MOTION = 0x3071
_TAG_SCENES = 0xDA7A
_TAG_CLIPS = 0xC11B

# The first shape is the scene's main object: large and nearest, so that it is the dominant
# shape (the label) in almost every scene; the others are smaller, farther distractors.
_MAIN_DEPTH = (2.0, 2.6)
_MAIN_SIZE = (1.1, 1.4)
_DISTRACTOR_DEPTH = (3.0, 5.9)
_DISTRACTOR_SIZE = (0.4, 0.7)
_BACKGROUND_DEPTH = (6.0, 10.0)
_MAX_ATTEMPTS = 64
_EYE = np.eye(3)
_EYE.flags.writeable = False

SizeLike = int | tuple[int, int] | Sequence[int]


# ---------------------------------------------------------------------------------------------
# Canonical outlines
# ---------------------------------------------------------------------------------------------


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


def _inside_grid(cls: int, to_canonical: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
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


_KEYPOINTS = _canonical_keypoints()


def amodal_mask(cls: int, transform: np.ndarray | Tensor, size: SizeLike) -> np.ndarray:
    """Pixels ``(H, W)`` (bool) whose centres lie inside the whole outline of a class-``cls``
    shape placed by ``transform`` ``(2, 3)`` (canonical → pixel coordinates), ignoring
    occlusion."""
    h, w = _as_size(size)
    inv = _inv_affine(np.asarray(transform, dtype=np.float64))
    return _inside_grid(cls, inv, _centres(w), _centres(h))


# ---------------------------------------------------------------------------------------------
# Textures, layouts and motion
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Texture:
    """Procedural colour of a surface at canonical points ``q``, clipped to [0, 1]::

        c(q) = base + G q + Σ_k a_k sin(2π f_k·q + φ_k) = L [q; 1] + Aᵀ sin(Φ [q; 1])

    ``rows`` (K + 3, 3) stacks ``Φ = [2π f_k | φ_k]`` (frequencies in cycles per canonical
    unit, phases) over ``L = [G | base]`` (gradient per canonical unit, base colour), both
    acting on homogeneous points ``(x, y, 1)``; ``amplitudes`` A (K, 3) holds the RGB
    amplitude of each grating.
    """

    rows: np.ndarray
    amplitudes: np.ndarray

    @property
    def phase(self) -> np.ndarray:
        """``Φ`` (K, 3): ``[2π f_k | φ_k]``."""
        return self.rows[: len(self.amplitudes)]

    @property
    def linear(self) -> np.ndarray:
        """``L`` (3, 3): ``[G | base]``."""
        return self.rows[len(self.amplitudes) :]

    @property
    def base(self) -> np.ndarray:
        """Colour ``(3,)`` at the canonical origin before the gratings."""
        return self.linear[:, 2]

    @property
    def freqs(self) -> np.ndarray:
        """Grating frequencies ``(K, 2)`` in cycles per canonical unit."""
        return self.phase[:, :2] / (2.0 * np.pi)

    def __call__(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Colours ``(3, N)`` at canonical points ``qx``, ``qy`` of shape ``(N,)``."""
        return self.evaluate(np.stack([qx, qy, np.ones_like(qx)]), np.eye(3))

    def evaluate_grid(self, x: np.ndarray, y: np.ndarray, to_canonical: np.ndarray) -> np.ndarray:
        """Unclipped float32 colours ``(3, H, W)`` on the grid of points ``(x[j], y[i])``
        (``x`` (W,), ``y`` (H,)) of a frame that ``to_canonical`` maps to the canonical frame.

        Each grating's phase is linear in the point, ``α x + β y + γ``, so it separates:
        ``sin(α x + β y + γ) = sin(α x) cos(β y + γ) + cos(α x) sin(β y + γ)``. Gratings and
        the linear part then become one (3H, 2K + 2) × (2K + 2, W) matrix product: only
        ``O(K (H + W))`` sines and no per-pixel trigonometry.
        """
        k = len(self.amplitudes)
        r = self.rows @ to_canonical  # (K + 3, 3): value = r0 x + r1 y + r2
        ax = np.multiply.outer(r[:k, 0], x)  # (K, W)
        by = np.multiply.outer(r[:, 1], y)  # (K + 3, H)
        by += r[:, 2:3]
        right = np.empty((2 * k + 2, len(x)), dtype=np.float32)
        np.sin(ax, out=right[:k], casting="same_kind")
        np.cos(ax, out=right[k : 2 * k], casting="same_kind")
        right[2 * k] = x
        right[2 * k + 1] = 1.0
        left = np.empty((3, len(y), 2 * k + 2), dtype=np.float32)
        amps = self.amplitudes.T[:, None, :]  # (3, 1, K)
        left[:, :, :k] = amps * np.cos(by[:k]).T
        left[:, :, k : 2 * k] = amps * np.sin(by[:k]).T
        left[:, :, 2 * k] = r[k:, 0:1]  # colour gradient along x
        left[:, :, 2 * k + 1] = by[k:]  # gradient along y plus base colour
        return (left.reshape(3 * len(y), 2 * k + 2) @ right).reshape(3, len(y), len(x))

    def evaluate(
        self,
        points: np.ndarray,
        to_canonical: np.ndarray,
        out: np.ndarray | None = None,
        clip: bool = True,
    ) -> np.ndarray:
        """Colours ``(3, N)`` at homogeneous points ``(3, N)`` of a frame that
        ``to_canonical`` (3, 3) maps to the canonical frame (e.g. pixels and ``T⁻¹``),
        written to ``out`` (3, N) when given; ``clip=False`` leaves clipping to the caller.

        Computed in the precision of ``points``; float32 is several times faster (vectorised
        ``sin``) and accurate to ~1e-5 here. ``einsum`` keeps these skinny products off the
        multithreaded BLAS, which only adds overhead at this size.
        """
        dtype = points.dtype
        k = len(self.amplitudes)
        rows = np.einsum("rj,jn->rn", (self.rows @ to_canonical).astype(dtype), points)
        waves = np.sin(rows[:k], out=rows[:k])
        amplitudes = self.amplitudes.astype(dtype, copy=False)
        out = np.einsum("kc,kn->cn", amplitudes, waves, out=out)
        out += rows[k:]
        return np.clip(out, 0.0, 1.0, out=out) if clip else out


@dataclass(frozen=True, eq=False)
class ShapeSpec:
    """One shape at frame 0: class index, centre ``(2,)`` in pixels, apparent circumradius
    ``R = f·physical_size/depth`` in pixels, rotation in radians, depth, physical size and
    texture. Arrays inside make these compare by identity (``eq=False``)."""

    cls: int
    centre: np.ndarray
    radius: float
    rotation: float
    depth: float
    physical_size: float
    texture: Texture

    def placement(self, t: int = 0, motion: ShapeMotion | None = None) -> np.ndarray:
        """``P(t)`` (3, 3): canonical outline → frame-0 pixel coordinates at time ``t``."""
        c, r, a = self.centre, self.radius, self.rotation
        if motion is not None and t:
            c = c + t * motion.translation
            a = a + t * motion.rotation
            r = r * motion.scale**t
        return _similarity(r, a, c)


@dataclass(frozen=True, eq=False)
class Background:
    """Textured ground-plane-like background. Its canonical frame is the frame-0 pixel frame
    shifted to the image centre; inverse depth ``1/z = w_mid + w_slope·(n·q)`` is linear in
    ``q``, with ``z`` clipped to ``[6, 10]``."""

    texture: Texture
    direction: np.ndarray  # (2,) unit vector n, towards nearer ground
    inv_depth_mid: float
    inv_depth_slope: float  # per pixel

    def depth(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Depth at canonical points ``qx``, ``qy`` (arrays of one shape)."""
        w = self.inv_depth_mid + self.inv_depth_slope * (
            self.direction[0] * qx + self.direction[1] * qy
        )
        return 1.0 / np.clip(w, 1.0 / _BACKGROUND_DEPTH[1], 1.0 / _BACKGROUND_DEPTH[0])

    def inverse_depth_row(self, to_canonical: np.ndarray) -> np.ndarray:
        """Row ``(3,)`` such that ``row @ p`` is the unclipped inverse depth at homogeneous
        points ``p`` of a frame that ``to_canonical`` (3, 3) maps to the canonical frame."""
        row = self.inv_depth_slope * (self.direction @ to_canonical[:2])
        row[2] += self.inv_depth_mid
        return row


@dataclass(frozen=True, eq=False)
class SceneLayout:
    """Everything needed to render a scene at frame 0: image size ``(H, W)``, background and
    shapes (in annotation order)."""

    size: tuple[int, int]
    background: Background
    shapes: tuple[ShapeSpec, ...]


@dataclass(frozen=True, eq=False)
class ShapeMotion:
    """Per-frame motion of a shape about its own centre: translation ``(2,)`` in pixels,
    rotation in radians and scale factor."""

    translation: np.ndarray
    rotation: float
    scale: float


def _similarity(scale: float, angle: float, translation: np.ndarray) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, translation[0]], [s, c, translation[1]], [0.0, 0.0, 1.0]])


def _inv_affine(a: np.ndarray) -> np.ndarray:
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


def _as_size(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def _lerp(u: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * u


_MAX_SHAPES = 4
_GRATINGS = 3
_TEXTURE_DRAWS = 6 + 6 * _GRATINGS  # gradient (6), per grating: angle, frequency, phase, RGB
_BG_DRAWS = 6
_SHAPE_DRAWS = 9
_SCALAR_DRAWS = 1 + _BG_DRAWS + _MAX_SHAPES * _SHAPE_DRAWS
_LAYOUT_DRAWS = _SCALAR_DRAWS + (1 + _MAX_SHAPES) * _TEXTURE_DRAWS


def _sample_textures(
    u: np.ndarray,
    base: np.ndarray,
    gradient: np.ndarray,
    fmin: np.ndarray,
    fmax: np.ndarray,
    amplitude: float,
) -> list[Texture]:
    """``m`` textures from uniforms ``u`` (m, 6 + 6K), base colours (m, 3), gradient bounds
    and frequency ranges ``fmin``, ``fmax`` (m,) in cycles per canonical unit."""
    m, k = len(u), _GRATINGS
    theta = np.pi * u[:, :k]
    mag = 2.0 * np.pi * _lerp(u[:, k : 2 * k], fmin[:, None], fmax[:, None])
    rows = np.empty((m, k + 3, 3))
    rows[:, :k, 0] = mag * np.cos(theta)
    rows[:, :k, 1] = mag * np.sin(theta)
    rows[:, :k, 2] = 2.0 * np.pi * u[:, 2 * k : 3 * k]  # phases
    rows[:, k:, :2] = (gradient[:, None] * (2.0 * u[:, 6 * k :] - 1.0)).reshape(m, 3, 2)
    rows[:, k:, 2] = base
    amps = (amplitude * (2.0 * u[:, 3 * k : 6 * k] - 1.0)).reshape(m, k, 3)
    return [Texture(rows[i], amps[i]) for i in range(m)]


def sample_layout(seed: int, size: SizeLike = (128, 128), attempt: int = 0) -> SceneLayout:
    """Draw the frame-0 layout of scene ``seed`` at ``size`` (before shapes that turn out
    invisible are dropped). The layout scales with the image: positions are relative to
    ``(H, W)`` and radii to ``f = 0.5·min(H, W)``. All draws come from one generator call
    (always drawn for 4 shapes, of which the first 1–4 are used); the scalars are handled as
    Python floats, which is much cheaper than numpy on arrays of a few elements."""
    h, w = _as_size(size)
    draws = _rng(seed, _TAG_LAYOUT, attempt).random(_LAYOUT_DRAWS)
    u = draws[:_SCALAR_DRAWS].tolist()
    num_shapes = 1 + min(int(u[0] * _MAX_SHAPES), _MAX_SHAPES - 1)
    m = min(h, w)

    # Background: colour gradient across the image, gratings of 1.5-8 cycles per image side,
    # inverse depth linear along a direction near "down" (nearest ground at the bottom).
    bg_base = [0.15 + 0.7 * v for v in u[1:4]]
    angle = math.radians(55.0 + 70.0 * u[4])
    z_near, z_far = 6.3 + 1.2 * u[5], 8.5 + 1.5 * u[6]
    direction = np.array([math.cos(angle), math.sin(angle)])
    half_extent = 0.5 * (abs(direction[0]) * w + abs(direction[1]) * h)

    # Shapes: class uniform; perspective size R = f·s/z; colour independent of the class,
    # moved half-way round the colour cube when too close to the background's (which then
    # puts it at an L1 distance of at least 1.05).
    params, bases, fmin, fmax = [], [bg_base], [1.5 / m], [8.0 / m]
    for i in range(num_shapes):
        v = u[1 + _BG_DRAWS + i * _SHAPE_DRAWS : 1 + _BG_DRAWS + (i + 1) * _SHAPE_DRAWS]
        cls = min(int(v[0] * len(SHAPE_CLASSES)), len(SHAPE_CLASSES) - 1)
        size_range, depth_range = (
            (_MAIN_SIZE, _MAIN_DEPTH) if i == 0 else (_DISTRACTOR_SIZE, _DISTRACTOR_DEPTH)
        )
        phys = size_range[0] + (size_range[1] - size_range[0]) * v[1]
        depth = depth_range[0] + (depth_range[1] - depth_range[0]) * v[2]
        radius = 0.5 * m * phys / depth
        margin = 0.25 if i == 0 else 0.1
        centre = np.array(
            [(margin + (1 - 2 * margin) * v[3]) * w, (margin + (1 - 2 * margin) * v[4]) * h]
        )
        params.append((cls, centre, radius, 2.0 * math.pi * v[5], depth, phys))
        base = v[6:9]
        if sum(abs(b - g) for b, g in zip(base, bg_base, strict=True)) <= 0.45:
            base = [(b + 0.5) % 1.0 for b in base]
        bases.append(base)
        # Gratings no finer than ~6 px per cycle so that textures stay smooth at pixel scale.
        fmax.append(min(max(radius / 6.0, 0.3), 1.3))
        fmin.append(0.25 * fmax[-1])
    gradient = np.full(1 + num_shapes, 0.2)
    gradient[0] = 0.35 / m
    textures = _sample_textures(
        draws[_SCALAR_DRAWS:].reshape(1 + _MAX_SHAPES, _TEXTURE_DRAWS)[: 1 + num_shapes],
        np.array(bases),
        gradient,
        np.array(fmin),
        np.array(fmax),
        0.03,
    )
    background = Background(
        texture=textures[0],
        direction=direction,
        inv_depth_mid=0.5 * (1.0 / z_near + 1.0 / z_far),
        inv_depth_slope=0.5 * (1.0 / z_near - 1.0 / z_far) / half_extent,
    )
    shapes = tuple(ShapeSpec(*p, texture=t) for p, t in zip(params, textures[1:], strict=True))
    return SceneLayout((h, w), background, shapes)


def _sample_motion(
    seed: int, num_frames: int, num_shapes: int, size: tuple[int, int], camera: bool, shapes: bool
) -> tuple[np.ndarray, list[ShapeMotion | None]]:
    """Cumulative camera ``(T, 3, 3)`` (frame 0 → frame t) and per-shape motions."""
    h, w = size
    u = _rng(seed, _TAG_MOTION).random(4 * num_frames + 4 * num_shapes)
    uc, us = u[: 4 * num_frames].reshape(-1, 4), u[4 * num_frames :].reshape(-1, 4)
    centre = np.array([0.5 * w, 0.5 * h])
    to_centre = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, 1.0]])
    cams = np.empty((num_frames, 3, 3))
    cams[0] = np.eye(3)
    for t in range(1, num_frames):
        angle = math.radians(_lerp(uc[t, 0], -2.0, 2.0))
        scale = _lerp(uc[t, 1], 0.98, 1.02)
        shift = _lerp(uc[t, 2:4], -3.0, 3.0)
        step = _similarity(scale, angle, centre + shift) @ to_centre if camera else np.eye(3)
        cams[t] = step @ cams[t - 1]
    motions: list[ShapeMotion | None] = [
        ShapeMotion(
            _lerp(us[k, :2], -2.0, 2.0),
            math.radians(_lerp(us[k, 2], -3.0, 3.0)),
            float(_lerp(us[k, 3], 0.97, 1.03)),
        )
        if shapes
        else None
        for k in range(num_shapes)
    ]
    return cams, motions


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _centres(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``(n,)``: ``j + 0.5`` (read-only)."""
    c = np.arange(n) + 0.5
    c.flags.writeable = False
    return c


_VERTEX_LISTS: dict[int, list[list[float]]] = {c: p.vertices.tolist() for c, p in _POLYGONS.items()}


def _outline_box(cls: int, a: np.ndarray) -> tuple[float, float, float, float]:
    """Analytic (unclipped) xyxy box of the class-``cls`` outline placed by ``a`` (3, 3)."""
    (a00, a01, a02), (a10, a11, a12) = a[:2].tolist()
    if cls == 0:  # the unit circle maps to an ellipse
        hx, hy = math.hypot(a00, a01), math.hypot(a10, a11)
        return a02 - hx, a12 - hy, a02 + hx, a12 + hy
    vertices = _VERTEX_LISTS[cls]  # a handful of points: Python floats beat numpy here
    xs = [a00 * vx + a01 * vy for vx, vy in vertices]
    ys = [a10 * vx + a11 * vy for vx, vy in vertices]
    return min(xs) + a02, min(ys) + a12, max(xs) + a02, max(ys) + a12


_BOX_STEP = 1024.0  # boxes are rounded outwards to multiples of 1/1024 px (exact in float32)


@dataclass
class _Frame:
    image: np.ndarray  # (3, H, W) float32
    depth: np.ndarray  # (H, W) float32
    instances: np.ndarray  # (H, W) int64, 0 background, k + 1 for layout shape k
    boxes: np.ndarray  # (n, 4) float32, clipped to the image, rounded outwards
    counts: np.ndarray  # (n,) visible pixels per shape


def _render_frame(
    layout: SceneLayout, transforms: np.ndarray, camera: np.ndarray, depths: np.ndarray
) -> _Frame:
    """Render one frame given the shape transforms ``(n, 3, 3)`` (canonical → pixels), the
    camera ``(3, 3)`` (frame-0 → this frame) and the shape depths ``(n,)`` in this frame."""
    h, w = layout.size
    n = len(layout.shapes)
    xs, ys = _centres(w), _centres(h)
    instances = np.zeros((h, w), dtype=np.int64)
    cam_scale = math.sqrt(abs(camera[0, 0] * camera[1, 1] - camera[0, 1] * camera[1, 0]))

    # Background; its canonical frame is the frame-0 pixel frame relative to the centre.
    bg = layout.background
    bg_inv = _inv_affine(camera)
    bg_inv[:2, 2] -= (0.5 * w, 0.5 * h)
    image = bg.texture.evaluate_grid(xs, ys, bg_inv)
    row = bg.inverse_depth_row(bg_inv)
    inv_depth = np.add.outer(row[1] * ys + row[2], row[0] * xs)
    np.clip(inv_depth, 1.0 / _BACKGROUND_DEPTH[1], 1.0 / _BACKGROUND_DEPTH[0], out=inv_depth)
    depth = np.divide(1.0 / cam_scale, inv_depth, out=inv_depth).astype(np.float32)

    boxes = []
    for k, shape in enumerate(layout.shapes):
        x0, y0, x1, y1 = _outline_box(shape.cls, transforms[k])
        boxes.append(
            (
                math.floor(min(max(x0, 0.0), w) * _BOX_STEP) / _BOX_STEP,
                math.floor(min(max(y0, 0.0), h) * _BOX_STEP) / _BOX_STEP,
                math.ceil(min(max(x1, 0.0), w) * _BOX_STEP) / _BOX_STEP,
                math.ceil(min(max(y1, 0.0), h) * _BOX_STEP) / _BOX_STEP,
            )
        )
    for k in np.argsort(-depths, kind="stable").tolist():  # painter's order: far to near
        shape = layout.shapes[k]
        x0, y0, x1, y1 = boxes[k]
        # Pixels whose centres can be inside: j + 0.5 ∈ [x0, x1], i + 0.5 ∈ [y0, y1].
        j0, j1 = math.ceil(x0 - 0.5), math.floor(x1 - 0.5) + 1
        i0, i1 = math.ceil(y0 - 0.5), math.floor(y1 - 0.5) + 1
        if j0 >= j1 or i0 >= i1:
            continue
        inv = _inv_affine(transforms[k])
        wx, wy = xs[j0:j1], ys[i0:i1]
        inside = _inside_grid(shape.cls, inv, wx, wy)
        colours = shape.texture.evaluate_grid(wx, wy, inv)
        np.copyto(image[:, i0:i1, j0:j1], colours, where=inside)
        np.copyto(depth[i0:i1, j0:j1], depths[k], where=inside, casting="same_kind")
        np.copyto(instances[i0:i1, j0:j1], k + 1, where=inside)
    np.clip(image, 0.0, 1.0, out=image)  # once for all surfaces
    counts = np.bincount(instances.reshape(-1), minlength=n + 1)[1:]
    boxes32 = np.array(boxes, dtype=np.float32).reshape(n, 4)
    return _Frame(image, depth, instances, boxes32, counts)


def _frame_transforms(
    layout: SceneLayout, camera: np.ndarray | None, motions: Sequence[ShapeMotion | None], t: int
) -> np.ndarray:
    """Shape transforms ``(n, 3, 3)`` (canonical → frame-t pixels); ``camera=None`` is I."""
    mats = np.stack([s.placement(t, m) for s, m in zip(layout.shapes, motions, strict=True)])
    return mats if camera is None else camera @ mats


def _visible_layout(
    seed: int, size: tuple[int, int]
) -> tuple[SceneLayout, _Frame, np.ndarray, np.ndarray]:
    """Layout of scene ``seed`` restricted to the shapes visible at frame 0, with that frame,
    its shape transforms ``(n, 3, 3)`` and depths ``(n,)``."""
    for attempt in range(_MAX_ATTEMPTS):
        layout = sample_layout(seed, size, attempt)
        n = len(layout.shapes)
        transforms = _frame_transforms(layout, None, [None] * n, 0)
        depths = np.array([s.depth for s in layout.shapes])
        frame = _render_frame(layout, transforms, _EYE, depths)
        keep = frame.counts > 0
        if not keep.any():
            continue
        if not keep.all():  # dropping hidden shapes changes no pixel: just renumber instances
            lut = np.zeros(n + 1, dtype=np.int64)
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
            frame.instances = lut[frame.instances]
            frame.boxes, frame.counts = frame.boxes[keep], frame.counts[keep]
            shapes = tuple(s for s, k in zip(layout.shapes, keep.tolist(), strict=True) if k)
            layout = SceneLayout(layout.size, layout.background, shapes)
            transforms, depths = transforms[keep], depths[keep]
        return layout, frame, transforms, depths
    raise RuntimeError(f"no visible shape in {_MAX_ATTEMPTS} layouts of seed {seed} at {size}")


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered scene with exact annotations (``n`` annotated shapes).

    * ``image`` (3, H, W) float32 in [0, 1]
    * ``label``: class index of the dominant shape (largest visible area)
    * ``mask`` (H, W) int64: 0 background, class index + 1 on shape pixels
    * ``instances`` (H, W) int64: 0 background, k + 1 on pixels of shape k
    * ``depth`` (H, W) float32: depth of the visible surface
    * ``boxes`` (n, 4) float32: amodal xyxy boxes in pixel coordinates, clipped to the image
    * ``box_labels`` (n,) int64 class indices
    * ``keypoints`` (n, 5, 3) float32: (x, y, visible) for the centre and the outline points
      on rays at the shape's rotation + k·90°
    * ``shape_depth`` (n,) float32: depth of each shape
    * ``transforms`` (n, 2, 3) float32: canonical outline → pixel coordinates of each shape
    """

    image: Tensor
    label: int
    mask: Tensor
    instances: Tensor
    depth: Tensor
    boxes: Tensor
    box_labels: Tensor
    keypoints: Tensor
    shape_depth: Tensor
    transforms: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """The dataset item: ``image``, ``label`` (0-d int64), ``mask``, ``instances``,
        ``depth``, ``boxes``, ``box_labels``, ``keypoints``."""
        return {
            "image": self.image,
            "label": torch.tensor(self.label, dtype=torch.int64),
            "mask": self.mask,
            "instances": self.instances,
            "depth": self.depth,
            "boxes": self.boxes,
            "box_labels": self.box_labels,
            "keypoints": self.keypoints,
        }


def _annotate(
    layout: SceneLayout, frame: _Frame, transforms: np.ndarray, depths: np.ndarray
) -> Scene:
    """Turn a rendered frame into a ``Scene``; every layout shape is annotated."""
    h, w = layout.size
    n = len(layout.shapes)
    classes = np.array([s.cls for s in layout.shapes], dtype=np.int64)

    # Keypoints: visible iff inside the image and the pixel containing it shows the instance.
    # Decided on the float32 coordinates that are handed out, so that users agree exactly.
    xy = _KEYPOINTS[classes] @ transforms[:, :2, :2].transpose(0, 2, 1)
    xy += transforms[:, None, :2, 2]
    xy = xy.astype(np.float32)
    cell = np.floor(xy).astype(np.int64)  # (n, 5, 2) pixel column, row
    inside = ((cell >= 0) & (cell < (w, h))).all(axis=2)
    np.maximum(cell, 0, out=cell)
    np.minimum(cell, (w - 1, h - 1), out=cell)
    shown = frame.instances[cell[..., 1], cell[..., 0]]
    visible = inside & (shown == np.arange(1, n + 1)[:, None])
    keypoints = np.concatenate([xy, visible[..., None].astype(np.float32)], axis=2)

    class_lut = np.concatenate([[0], classes + 1])
    return Scene(
        image=torch.from_numpy(frame.image),
        label=int(classes[int(np.argmax(frame.counts))]),
        mask=torch.from_numpy(class_lut[frame.instances]),
        instances=torch.from_numpy(frame.instances),
        depth=torch.from_numpy(frame.depth),
        boxes=torch.from_numpy(frame.boxes),
        box_labels=torch.from_numpy(classes),
        keypoints=torch.from_numpy(keypoints),
        shape_depth=torch.from_numpy(depths.astype(np.float32)),
        transforms=torch.from_numpy(transforms[:, :2].astype(np.float32)),
    )


def render_scene(seed: int, size: SizeLike = (128, 128)) -> Scene:
    """Render scene ``seed`` at ``size`` (``H`` or ``(H, W)``). Shapes without any visible
    pixel are dropped from the scene; at least one shape is always visible."""
    layout, frame, transforms, depths = _visible_layout(seed, _as_size(size))
    return _annotate(layout, frame, transforms, depths)


@dataclass(frozen=True, eq=False)
class Clip:
    """A short clip of ``T`` frames of one scene with ``n`` shapes (fixed identities).

    * ``frames``: the per-frame ``Scene``s
    * ``images`` (T, 3, H, W) float32, ``masks`` / ``instances`` (T, H, W) int64,
      ``depths`` (T, H, W) float32, ``labels`` (T,) int64 (dominant class per frame)
    * ``boxes`` / ``keypoints``: per-frame lists of (n, 4) / (n, 5, 3) tensors
    * ``box_labels`` (n,) int64
    * ``flow`` (T, 2, H, W) float32 backward flow: pixel ``p`` of frame ``t`` shows the surface
      point that was at ``p + flow[t](p)`` in frame ``t − 1``; ``flow[0] = 0``
    * ``camera`` (T, 2, 3) float32: frame-0 → frame-t pixel coordinates of static points
    * ``shape_transforms`` (T, n, 2, 3) float32: canonical outline → frame-t pixels
    """

    frames: tuple[Scene, ...]
    images: Tensor
    masks: Tensor
    instances: Tensor
    depths: Tensor
    labels: Tensor
    boxes: list[Tensor]
    keypoints: list[Tensor]
    box_labels: Tensor
    flow: Tensor
    camera: Tensor
    shape_transforms: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """The dataset item; per-frame boxes and keypoints are stacked to (T, n, 4) and
        (T, n, 5, 3) since identities are fixed across frames."""
        return {
            "images": self.images,
            "labels": self.labels,
            "masks": self.masks,
            "instances": self.instances,
            "depths": self.depths,
            "flow": self.flow,
            "camera": self.camera,
            "boxes": torch.stack(self.boxes),
            "box_labels": self.box_labels,
            "keypoints": torch.stack(self.keypoints),
            "shape_transforms": self.shape_transforms,
        }


def _backward_flow(instances: np.ndarray, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Backward flow ``(2, H, W)`` of a frame with ``instances`` ``(H, W)``; ``current`` and
    ``previous`` ``(n + 1, 3, 3)`` map each surface's canonical frame (0 background, k + 1
    shape k) to pixels in this frame and the previous one."""
    h, w = instances.shape
    # Per surface, p ↦ T(t−1) T(t)⁻¹ p − p as a (2, 3) matrix acting on (x, y, 1).
    inverse = np.stack([_inv_affine(a) for a in current])
    disp = (previous @ inverse)[:, :2] - np.eye(3)[:2]
    flow = np.empty((2, h * w))
    y, x = np.meshgrid(_centres(h), _centres(w), indexing="ij")
    points = np.stack([x.reshape(-1), y.reshape(-1), np.ones(h * w)])
    ids = instances.reshape(-1)
    for s in np.flatnonzero(np.bincount(ids)).tolist():
        sel = ids == s
        flow[:, sel] = np.einsum("ij,jn->in", disp[s], points[:, sel])
    return flow.astype(np.float32).reshape(2, h, w)


def render_clip(
    seed: int,
    num_frames: int = 4,
    size: SizeLike = (128, 128),
    *,
    camera_motion: bool = True,
    shape_motion: bool = True,
) -> Clip:
    """Render a ``num_frames`` clip of scene ``seed``: frame 0 is ``render_scene(seed, size)``,
    then the camera moves by a random similarity per frame (rotation ±2°, scale 0.98–1.02,
    translation ±3 px, about the image centre) and each shape by its own constant per-frame
    similarity about its centre (translation ±2 px, rotation ±3°, scale 0.97–1.03).

    Shapes keep their instance ids in every frame; a shape may be invisible in later frames
    (keypoints all invisible, box possibly empty after clipping). Depths scale with the
    camera zoom (``z / s_cam``), so the background stays behind every shape.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    hw = _as_size(size)
    layout, first, first_transforms, base_depths = _visible_layout(seed, hw)
    n = len(layout.shapes)
    cams, motions = _sample_motion(seed, num_frames, n, hw, camera_motion, shape_motion)
    to_centre = np.array([[1.0, 0.0, 0.5 * hw[1]], [0.0, 1.0, 0.5 * hw[0]], [0.0, 0.0, 1.0]])

    frames: list[Scene] = []
    flows = np.zeros((num_frames, 2, *hw), dtype=np.float32)
    previous = np.concatenate([to_centre[None], first_transforms], axis=0)
    frames.append(_annotate(layout, first, first_transforms, base_depths))
    for t in range(1, num_frames):
        cam = cams[t]
        transforms = _frame_transforms(layout, cam, motions, t)
        depths = base_depths / math.sqrt(abs(cam[0, 0] * cam[1, 1] - cam[0, 1] * cam[1, 0]))
        frame = _render_frame(layout, transforms, cam, depths)
        frames.append(_annotate(layout, frame, transforms, depths))
        # Surface affines, background first: canonical → frame-t pixels.
        surfaces = np.concatenate([(cam @ to_centre)[None], transforms], axis=0)
        flows[t] = _backward_flow(frame.instances, surfaces, previous)
        previous = surfaces

    all_transforms = [f.transforms for f in frames]
    return Clip(
        frames=tuple(frames),
        images=torch.stack([f.image for f in frames]),
        masks=torch.stack([f.mask for f in frames]),
        instances=torch.stack([f.instances for f in frames]),
        depths=torch.stack([f.depth for f in frames]),
        labels=torch.tensor([f.label for f in frames], dtype=torch.int64),
        boxes=[f.boxes for f in frames],
        keypoints=[f.keypoints for f in frames],
        box_labels=frames[0].box_labels,
        flow=torch.from_numpy(flows),
        camera=torch.from_numpy(cams[:, :2].astype(np.float32)),
        shape_transforms=torch.stack(all_transforms),
    )


# ---------------------------------------------------------------------------------------------
# Datasets and data module
# ---------------------------------------------------------------------------------------------


def item_seed(seed: int, split: str, index: int, tag: int = _TAG_SCENES) -> int:
    """Scene seed of item ``index`` of ``split``: a 64-bit hash of ``(seed, split, index)``."""
    code = zlib.crc32(split.encode("utf-8"))
    state = np.random.SeedSequence([seed, tag, code, index]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


# Label maps hold at most 5 distinct small values: memoised as uint8, handed out as int64.
_LABEL_MAPS = frozenset({"mask", "instances", "masks"})


class _Memoised(Dataset):
    """Index checks and the optional memo shared by the scene and clip datasets. Memoised
    label maps are stored as uint8 (about 40 % of an item's memory at int64); note that each
    DataLoader worker process keeps its own memo."""

    def __init__(
        self, split: str, size: int, image_size: int | tuple[int, int], seed: int, cache: bool
    ) -> None:
        self.split = split
        self.size = int(size)
        self.image_size = _as_size(image_size)
        self.seed = int(seed)
        self.cache = cache
        self._items: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return self.size

    def _render(self, index: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = int(index)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        if not self.cache:
            return {**self._render(index), "index": torch.tensor(index)}
        stored = self._items.get(index)
        if stored is None:
            stored = {
                k: v.to(torch.uint8) if k in _LABEL_MAPS else v
                for k, v in self._render(index).items()
            }
            self._items[index] = stored
        item = {k: v.long() if k in _LABEL_MAPS else v for k, v in stored.items()}
        return {**item, "index": torch.tensor(index)}


class SyntheticScenes(_Memoised):
    """``size`` synthetic scenes of ``split``: item ``i`` is
    ``render_scene(item_seed(seed, split, i), image_size).as_dict()`` (see ``Scene.as_dict``),
    so splits never share scenes. Rendered items are memoised when ``cache`` is set (returned
    tensors may then be shared between calls: do not modify them in place)."""

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        image_size: int | tuple[int, int] = 128,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        super().__init__(split, size, image_size, seed, cache)

    def _render(self, index: int) -> dict[str, Tensor]:
        return render_scene(item_seed(self.seed, self.split, index), self.image_size).as_dict()


class SyntheticClips(_Memoised):
    """``size`` synthetic clips of ``num_frames`` frames of ``split`` (see ``Clip.as_dict``),
    memoised when ``cache`` is set. ``shape_motion=False`` keeps the shapes still in the
    scene, so the only motion is the camera's: a global affine per frame."""

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        image_size: int | tuple[int, int] = 128,
        num_frames: int = 4,
        seed: int = 0,
        cache: bool = True,
        shape_motion: bool = True,
    ) -> None:
        super().__init__(split, size, image_size, seed, cache)
        self.num_frames = int(num_frames)
        self.shape_motion = bool(shape_motion)

    def _render(self, index: int) -> dict[str, Tensor]:
        clip_seed = item_seed(self.seed, self.split, index, _TAG_CLIPS)
        clip = render_clip(
            clip_seed, self.num_frames, self.image_size, shape_motion=self.shape_motion
        )
        return clip.as_dict()


_VARIABLE_FIELDS = frozenset({"boxes", "box_labels", "keypoints", "shape_transforms"})


def _collate(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Tensor | list[Tensor]] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = list(values) if key in _VARIABLE_FIELDS else torch.stack(values)
    return out


def collate_scenes(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    """Stack ``image`` (B, 3, H, W), ``label`` (B,), ``mask`` / ``instances`` (B, H, W) and
    ``depth`` (B, H, W); ``boxes``, ``box_labels`` and ``keypoints`` become lists of length B."""
    return _collate(batch)


def collate_clips(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    """Stack the per-clip fields to (B, T, ...); ``boxes``, ``box_labels``, ``keypoints`` and
    ``shape_transforms`` (variable number of shapes) become lists of length B."""
    return _collate(batch)


class SyntheticScenesDataModule(pl.LightningDataModule):
    """Train / val / test splits of ``SyntheticScenes`` (disjoint by construction), batched
    with ``collate_scenes``."""

    def __init__(
        self,
        image_size: int = 128,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 500,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.image_size = image_size
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: SyntheticScenes | None = None
        self.val_set: SyntheticScenes | None = None
        self.test_set: SyntheticScenes | None = None

    @property
    def num_classes(self) -> int:
        """Number of shape classes."""
        return len(SHAPE_CLASSES)

    def _make(self, split: str, size: int) -> SyntheticScenes:
        return SyntheticScenes(split, size, self.image_size, self.seed)

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets needed for ``stage`` (all of them when ``None``)."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._make("train", self.train_size)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._make("val", self.val_size)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._make("test", self.test_size)

    def _loader(self, dataset: SyntheticScenes, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            collate_fn=collate_scenes,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (see ``collate_scenes``); the last one may be short."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        if self.test_set is None:
            self.setup("test")
        assert self.test_set is not None
        return self._loader(self.test_set, shuffle=False)


class SyntheticClipsDataModule(SyntheticScenesDataModule):
    """Train / val / test splits of ``SyntheticClips`` (``num_frames`` frames each, with the
    known backward flow and camera motion), batched with ``collate_clips`` to (B, T, ...).
    ``shape_motion=False``: the camera's global affine is the only motion."""

    def __init__(
        self,
        image_size: int = 128,
        num_frames: int = 4,
        train_size: int = 500,
        val_size: int = 50,
        test_size: int = 100,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        shape_motion: bool = True,
    ) -> None:
        super().__init__(image_size, train_size, val_size, test_size, batch_size, num_workers, seed)
        self.save_hyperparameters()
        self.shape_motion = shape_motion
        if num_frames < 2:
            raise ValueError(
                f"clips need at least 2 frames (an I-frame and a P-frame), not {num_frames}"
            )
        self.num_frames = num_frames

    def _make(self, split: str, size: int) -> SyntheticClips:  # type: ignore[override]
        return SyntheticClips(
            split, size, self.image_size, self.num_frames, self.seed, shape_motion=self.shape_motion
        )
