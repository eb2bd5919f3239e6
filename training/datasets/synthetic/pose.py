"""3-D placement of the synthetic shapes' keypoints: tilted planes, skeletons, depth order.

Every shape is a flat card. In the default scenes it faces the camera, so its five keypoints
(:mod:`.shapes`) all lie at the card's depth. With a *tilt*, each card turns out of the image
plane by an angle ``θ`` about an in-plane axis ``u = (cos ψ, sin ψ)`` through its centre ``c``
and is seen under weak perspective: a point of the fronto-parallel card at image offset ``d``
from the centre shows at ``c + (d·u) u + cos θ (d·v) v`` (``v ⟂ u``: foreshortened across the
axis) and lies at depth ``z + sin θ (d·v) z / f``. Its depth is therefore a plane in pixel
coordinates::

    z(p) = z_k + tan θ · (z_k / f) · v · (p − c)          f = 0.5·min(H, W), as in the layout

which the renderer writes into the depth map (a z-buffer between the tilted cards), and the
keypoints' depths are that plane at their pixel positions. Their 3-D camera coordinates are
the back-projection ``X = (x − c_x)·Z/f, Y = (y − c_y)·Z/f``, so the 3-D joints project exactly
onto the 2-D keypoints.

A tilt's magnitude shows in the foreshortened outline; its sign (which side is nearer) does
not, under weak perspective. *Fog* (aerial perspective) makes it visible: a pixel at depth
``z`` shows ``fog + (colour − fog)·exp(−κ z)``, so the nearer half of a tilted card has more
contrast. Both are off by default (the scenes, and every figure measured on them, are
unchanged); :class:`~training.datasets.synthetic.data.SyntheticScenes` takes ``tilt`` (the
largest ``θ`` in degrees) and ``fog`` (``κ`` per depth unit).

Each class has a skeleton of :data:`NUM_PARTS` parent → child parts over its keypoints
(:data:`PARTS`), and each part a relative depth order (HEMlets)::

    r(z_p, z_c) = +1 if z_p − z_c > ε,   0 if |z_p − z_c| ≤ ε,   −1 if z_p − z_c < −ε
"""

from __future__ import annotations

import math

import numpy as np

from featcodec.models.tasks.pose3d import DEPTH_ORDER_EPS
from featcodec.training.datasets.synthetic.seeds import TAG_TILT, rng
from featcodec.training.datasets.synthetic.shapes import NUM_KEYPOINTS, SHAPE_CLASSES

NUM_PARTS = 4
"""Parts (parent → child keypoint pairs) of every class's skeleton."""

# Keypoints: 0 the centre, 1..4 the outline points on the rays at rotation + 0°, 90°, 180°,
# 270°. A skeleton per class: rooted at the centre, with chains where the outline suggests one.
PARTS = np.array(
    [
        [[0, 1], [0, 2], [0, 3], [0, 4]],  # circle: four spokes
        [[0, 1], [1, 2], [0, 3], [3, 4]],  # square: two two-link arms
        [[0, 1], [1, 2], [2, 3], [3, 4]],  # triangle: one chain round the outline
        [[0, 1], [0, 2], [2, 3], [0, 4]],  # star: three spokes, one with a second link
        [[0, 1], [0, 3], [1, 2], [3, 4]],  # cross: two arms from the centre
    ],
    dtype=np.int64,
)
"""``(classes, NUM_PARTS, 2)``: the ``(parent, child)`` keypoint indexes of each class's parts;
every skeleton is a tree rooted at keypoint 0 (the centre)."""


def check_scene_options(tilt: float, fog: float) -> None:
    """``ValueError`` unless ``0 <= tilt < 90`` (degrees) and ``fog >= 0``."""
    if not 0.0 <= tilt < 90.0 or fog < 0.0:
        raise ValueError(f"tilt must lie in [0, 90) degrees and fog be ≥ 0, got {tilt}, {fog}")


FOG_COLOUR = 0.7
"""The grey that fog fades towards."""

assert PARTS.shape == (len(SHAPE_CLASSES), NUM_PARTS, 2) and PARTS.max() < NUM_KEYPOINTS


def focal_length(size: tuple[int, int]) -> float:
    """The scenes' focal length in pixels, ``0.5·min(H, W)`` (apparent radius = f·size/depth)."""
    return 0.5 * min(size)


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """``(fx, fy, cx, cy)`` in pixels of a scene of ``size`` ``(H, W)``: the principal point is
    the image centre."""
    h, w = size
    f = focal_length(size)
    return np.array([f, f, 0.5 * w, 0.5 * h])


def sample_tilts(seed: int, attempt: int, count: int, max_tilt_deg: float) -> np.ndarray:
    """Tilts ``(count, 2)``: angle ``θ`` uniform in ``[0, max_tilt]`` and axis angle ``ψ`` uniform
    in ``[0, 2π)``, radians, from the scene's own tilt stream (the layout stream is not
    touched, so a tilted scene has the untilted one's layout)."""
    u = rng(seed, TAG_TILT, attempt).random((count, 2))
    return np.stack([math.radians(max_tilt_deg) * u[:, 0], 2.0 * math.pi * u[:, 1]], axis=1)


def _axes(psi: float) -> tuple[np.ndarray, np.ndarray]:
    u = np.array([math.cos(psi), math.sin(psi)])
    return u, np.array([-u[1], u[0]])


def tilt_transforms(transforms: np.ndarray, tilts: np.ndarray) -> np.ndarray:
    """Shape transforms ``(n, 3, 3)`` (canonical → pixels) with each card tilted by its
    ``(θ, ψ)``: the linear part becomes ``(u uᵀ + cos θ v vᵀ)·L``, the centre stays."""
    out = transforms.copy()
    for k, (theta, psi) in enumerate(tilts.tolist()):
        u, v = _axes(psi)
        squash = np.outer(u, u) + math.cos(theta) * np.outer(v, v)
        out[k, :2, :2] = squash @ transforms[k, :2, :2]
    return out


def depth_planes(
    transforms: np.ndarray, tilts: np.ndarray, depths: np.ndarray, focal: float
) -> np.ndarray:
    """Rows ``(n, 3)`` with ``z(x, y) = row · (x, y, 1)`` on each tilted card (the module
    docstring's plane); a card with ``θ = 0`` has the row ``(0, 0, z_k)``."""
    rows = np.zeros((len(depths), 3))
    for k, ((theta, psi), z) in enumerate(zip(tilts.tolist(), depths.tolist(), strict=True)):
        _, v = _axes(psi)
        g = math.tan(theta) * (z / focal) * v
        rows[k, :2] = g
        rows[k, 2] = z - float(g @ transforms[k, :2, 2])
    return rows


def joints_3d(xy: np.ndarray, planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera coordinates ``(n, J, 3)`` of keypoints ``xy`` ``(n, J, 2)`` (pixels) on the cards
    whose depth planes are ``planes`` ``(n, 3)``: ``Z`` from the plane, ``X, Y`` back-projected."""
    fx, fy, cx, cy = intrinsics(size).tolist()
    z = planes[:, None, 0] * xy[..., 0] + planes[:, None, 1] * xy[..., 1] + planes[:, None, 2]
    return np.stack([(xy[..., 0] - cx) * z / fx, (xy[..., 1] - cy) * z / fy, z], axis=-1)


def depth_order(z: np.ndarray, parts: np.ndarray, eps: float = DEPTH_ORDER_EPS) -> np.ndarray:
    """The relative depth order ``r(z_p, z_c)`` ``(..., K)`` int64 of the parts ``(..., K, 2)``
    of joints with depths ``z`` ``(..., J)``."""
    zp = np.take_along_axis(z, parts[..., 0], axis=-1)
    zc = np.take_along_axis(z, parts[..., 1], axis=-1)
    diff = zp - zc
    return (diff > eps).astype(np.int64) - (diff < -eps).astype(np.int64)


def apply_fog(image: np.ndarray, depth: np.ndarray, density: float) -> None:
    """Fade ``image`` ``(3, H, W)`` in place towards :data:`FOG_COLOUR` by
    ``exp(−density·depth)`` (``depth`` ``(H, W)``)."""
    keep = np.exp(-density * depth.astype(np.float64)).astype(np.float32)
    image -= FOG_COLOUR
    image *= keep
    image += FOG_COLOUR
