"""Layouts of the synthetic scenes: procedural textures, shapes at frame 0 and the background.

A scene is a textured background plus 1–4 shapes from ``SHAPE_CLASSES``, each in its own
canonical frame (:mod:`.shapes`), placed at frame 0 by ``P_k = P_k(0)``; the background's
canonical frame is the frame-0 pixel frame shifted to the image centre.

* Textures are functions of continuous canonical coordinates (a colour gradient plus three
  sinusoid gratings), so a surface looks the same under any affine map. On a pixel grid they
  separate into row and column factors (``Texture.evaluate_grid``). Shape colours are random,
  independent of the class.
* Perspective: physical size ``s ∈ [0.6, 1.2]``, depth ``z ∈ [2, 5.9]``, apparent circumradius
  ``R = f·s/z`` with ``f = 0.5·min(H, W)``. The background is a ground-plane-like depth in
  ``[6, 10]`` (inverse depth linear in the image), always farther than every shape.

:func:`sample_layout` draws everything from the scene's layout stream (:mod:`.seeds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featcodec.training.datasets.synthetic.geometry import SizeLike, as_size, similarity
from featcodec.training.datasets.synthetic.motion import ShapeMotion
from featcodec.training.datasets.synthetic.seeds import TAG_LAYOUT, lerp, rng
from featcodec.training.datasets.synthetic.shapes import SHAPE_CLASSES

# The first shape is the scene's main object: large and nearest, so that it is the dominant
# shape (the label) in almost every scene; the others are smaller, farther distractors.
_MAIN_DEPTH = (2.0, 2.6)
_MAIN_SIZE = (1.1, 1.4)
_DISTRACTOR_DEPTH = (3.0, 5.9)
_DISTRACTOR_SIZE = (0.4, 0.7)

BACKGROUND_DEPTH = (6.0, 10.0)
"""The background's depth range ``[z_min, z_max]``: beyond every shape."""


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
        return similarity(r, a, c)


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
        return 1.0 / np.clip(w, 1.0 / BACKGROUND_DEPTH[1], 1.0 / BACKGROUND_DEPTH[0])

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
    mag = 2.0 * np.pi * lerp(u[:, k : 2 * k], fmin[:, None], fmax[:, None])
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
    h, w = as_size(size)
    draws = rng(seed, TAG_LAYOUT, attempt).random(_LAYOUT_DRAWS)
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
