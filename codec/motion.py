"""Latent-space motion: predict a CNN feature tensor from a reference tensor and input motion.

Ulhaq & Bajić, "Latent Space Motion Analysis for Collaborative Intelligence", show that
convolutions, pointwise activations and pooling (approximately) carry the input's optical flow
through unchanged, up to the layer's stride ``s``: the motion of a stride-``s`` tensor is the
input motion sampled at the tensor's positions and rescaled, ``ṽ(x, y) ≈ v(s·x, s·y)/s``. The
server therefore predicts the current tensor by warping the last decoded one::

    frame t-1 ──g──▶ y_{t-1} ──code──▶ ŷ_{t-1}                              (server side)
       │ v = input motion (B, 2, H, W), px                  │
       │        └────────▶ ṽ = latent_flow(v, s) ──────────▶ warp(ŷ_{t-1}, ṽ)
       ▼                   (B, 2, ⌈H/s⌉, ⌈W/s⌉)              = ỹ_t ≈ y_t, + valid mask
    frame t  ──g──▶ y_t

Conventions (every function here follows them):

* A *flow* is a float tensor ``(B, 2, H, W)``; channel 0 is x (horizontal, to the right),
  channel 1 is y (down), in pixels of the grid it lives on. It is a *backward* flow: for each
  pixel ``p`` of the *target* frame it gives where that pixel comes from in the *reference*
  frame, ``target(p) = reference(p + flow(p))``.
* Continuous coordinates: pixel ``(i, j)`` (row, column) covers ``[j, j+1) × [i, i+1)`` and
  has its centre at ``(x, y) = (j + 0.5, i + 0.5)``. Latent pixel ``(i, j)`` of a stride-``s``
  layer covers input pixels ``[s·j, s·(j+1)) × [s·i, s·(i+1))``, centre
  ``(s·(j + 0.5), s·(i + 0.5))``. Hence ``x_in = s·x_lat`` exactly, for centres and edges::

      input  (s=2)  | 0 | 1 | 2 | 3 |     centre of input pixel j:  j + 0.5
                    0   1   2   3   4
      latent        |   0   |   1   |     centre of latent pixel j: s·(j + 0.5) input px

* ``grid_sample`` is always called with ``align_corners=False``: its normalised coordinate
  ``-1``/``+1`` is then the outer *edge* of the border pixels, so continuous coordinate ``x``
  maps to ``2x/W - 1``, which is exactly the convention above.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from featcodec.codec.errors import InputError
from featcodec.codec.exact import RangeExceeded, round_shift

WARP_MODES = ("bilinear", "bicubic", "nearest")
FLOW_MODES = ("bilinear", "bicubic", "nearest", "area")
MASK_TOLERANCE = 1e-3  # px: a source point this close outside the centres still counts as inside


def _check_finite(x: Tensor, what: str) -> None:
    # One reduction and one device→host sync (the `bool`); callers skip it with check=False.
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"motion: the {what} contains NaN or infinite values")


def check_stride(stride: object) -> int:
    """``stride`` as an int; InputError unless it is an integer >= 1."""
    if isinstance(stride, bool) or not isinstance(stride, Integral) or stride < 1:
        raise InputError(f"motion: the stride must be an integer >= 1, not {stride!r}")
    return int(stride)


def _check_flow(flow: object, what: str = "flow") -> Tensor:
    if not isinstance(flow, Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
        raise InputError(f"motion: the {what} must have shape (B, 2, H, W), not {shape}")
    if not flow.is_floating_point():
        raise InputError(f"motion: the {what} must be a floating-point tensor, not {flow.dtype}")
    return flow


def _check_pair(reference: object, flow: object) -> Tensor:
    """The flow, after checking that ``reference`` is a (B, C, h, w) float tensor and the flow
    a (B, 2, h, w) float tensor on its grid (:func:`warp`, :func:`exact_warp`)."""
    if not isinstance(reference, Tensor) or reference.dim() != 4:
        shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference)
        raise InputError(f"motion: the reference must have shape (B, C, h, w), not {shape}")
    if not reference.is_floating_point():
        raise InputError(f"motion: the reference must be floating-point, not {reference.dtype}")
    flow = _check_flow(flow)
    B, _, h, w = reference.shape
    if flow.shape[0] != B or tuple(flow.shape[-2:]) != (h, w):
        raise InputError(
            f"motion: the flow {tuple(flow.shape)} does not match the reference "
            f"{tuple(reference.shape)} (batch and size must agree)"
        )
    return flow


def _check_theta(theta: object) -> Tensor:
    if not isinstance(theta, Tensor) or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise InputError(f"motion: theta must have shape (B, 2, 3), not {shape}")
    if not theta.is_floating_point():
        raise InputError(f"motion: theta must be a floating-point tensor, not {theta.dtype}")
    return theta


def check_size(size: object) -> tuple[int, int]:
    """``size`` as ``(H, W)``; InputError unless it is two positive integers."""
    ok = isinstance(size, tuple | list) and len(size) == 2
    if not ok or not all(
        isinstance(n, Integral) and not isinstance(n, bool) and n >= 1 for n in size
    ):
        raise InputError(f"motion: a size must be two positive integers (H, W), not {size!r}")
    return int(size[0]), int(size[1])


def _coord_dtype(dtype: torch.dtype) -> torch.dtype:
    """Coordinates are computed in at least float32: fp16 cannot hold pixel positions."""
    return torch.promote_types(dtype, torch.float32)


def _sample(x: Tensor, grid: Tensor, mode: str, padding: str) -> Tensor:
    """``grid_sample`` in ``x``'s dtype on CUDA; on CPU, fp16/bf16 run in float32 (not every
    supported torch has low-precision CPU kernels) and the result is cast back."""
    work = x.dtype
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        work = torch.float32
    out = F.grid_sample(
        x.to(work), grid.to(work), mode=mode, padding_mode=padding, align_corners=False
    )
    return out.to(x.dtype)


def latent_flow(
    flow: Tensor,
    stride: int,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
    check: bool = True,
) -> Tensor:
    """The motion of a stride-``s`` tensor from the input motion: ``ṽ(p) = v(s·p)/s`` (paper,
    "Tensor reconstruction experiments"), ``p`` a latent pixel centre.

    ``flow`` (B, 2, H, W) is a backward input flow in input pixels; the result (B, 2, h, w) is
    in latent pixels, ``(h, w) = (⌈H/s⌉, ⌈W/s⌉)`` unless ``size`` is given.

    Modes ``"bilinear"`` (default), ``"bicubic"``, ``"nearest"`` *point-sample* ``v`` at the
    latent centres ``s·(j + 0.5)`` with ``grid_sample``: that is the paper's formula literally,
    works for any ``size``, and bilinear is exact for affine flows (bicubic is not next to the
    borders, where its taps read clamped values). Centres beyond the input (when ``s``
    does not divide ``H`` or ``W``) take the border value. ``"area"`` instead averages each
    ``s × s`` block (partial blocks at the edges over their own pixels): a low-pass version for
    noisy dense optical flow, equal to point sampling for affine flows; it needs the default size.
    ``check=False`` skips the NaN/inf test (a host sync).
    """
    flow = _check_flow(flow)
    s = check_stride(stride)
    if mode not in FLOW_MODES:
        raise InputError(f"motion: unknown flow sampling mode {mode!r}, expected {FLOW_MODES}")
    H, W = flow.shape[-2:]
    default = (-(-H // s), -(-W // s))
    h, w = default if size is None else check_size(size)
    if check:
        _check_finite(flow, "flow")
    ct = _coord_dtype(flow.dtype)
    if mode == "area":  # in float32 at least: not every torch pools fp16 on CPU
        if (h, w) != default:
            raise InputError(f"motion: area sampling needs the size {default}, not {(h, w)}")
        return (F.avg_pool2d(flow.to(ct), s, s, ceil_mode=True) / s).to(flow.dtype)
    gx = torch.arange(w, device=flow.device, dtype=ct).add_(0.5).mul_(2.0 * s / W).sub_(1.0)
    gy = torch.arange(h, device=flow.device, dtype=ct).add_(0.5).mul_(2.0 * s / H).sub_(1.0)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)
    grid = grid.unsqueeze(0).expand(flow.shape[0], h, w, 2)
    return _sample(flow, grid, mode, "border") / s


def affine_flow(theta: Tensor, size: tuple[int, int], check: bool = True) -> Tensor:
    """Dense backward flow (B, 2, H, W) of the affine maps ``theta`` (B, 2, 3).

    ``theta`` maps a target point ``(x, y, 1)`` to its reference point, both in continuous
    pixel coordinates (pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``), so the flow at a
    centre ``p`` is ``A·p + t - p``. The paper's test motions (translation, scaling, shear,
    rotation) are such maps. The flow has theta's dtype (at least float32) and device.
    """
    theta = _check_theta(theta)
    H, W = check_size(size)
    if check:
        _check_finite(theta, "theta")
    ct = _coord_dtype(theta.dtype)
    xs = torch.arange(W, device=theta.device, dtype=ct).add_(0.5)
    ys = torch.arange(H, device=theta.device, dtype=ct).add_(0.5)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack((xx, yy, torch.ones_like(xx)))  # (3, H, W)
    mapped = torch.einsum("bkc,chw->bkhw", theta.to(ct), points)
    return mapped - points[:2]


def latent_affine(theta: Tensor, stride: int, check: bool = True) -> Tensor:
    """The affine maps ``theta`` (B, 2, 3) of the input expressed in a stride-``s`` tensor's
    continuous coordinates.

    With ``x_in = s·x_lat`` (see the module conventions; the half-pixel offsets cancel because
    both grids put pixel edges at integers), ``s·x'_lat = A·s·x_lat + t``, so
    ``x'_lat = A·x_lat + t/s``: the linear part stays, the translation is divided by ``s``.
    """
    theta = _check_theta(theta)
    s = check_stride(stride)
    if check:
        _check_finite(theta, "theta")
    return torch.cat((theta[..., :2], theta[..., 2:] / s), dim=-1)


def warp(
    reference: Tensor, flow: Tensor, mode: str = "bilinear", check: bool = True
) -> tuple[Tensor, Tensor]:
    """Predict a target tensor from ``reference`` (B, C, h, w) and a backward ``flow``
    (B, 2, h, w) on the same grid: ``prediction(p) = reference(p + flow(p))``.

    Returns the prediction (B, C, h, w), in reference's dtype and device, and a bool mask
    (B, 1, h, w) that is True where the source point lies within the reference's pixel centres
    (``0 ≤ j + flow_x ≤ w - 1``, same for y, up to ``MASK_TOLERANCE`` px), i.e. where a bilinear
    prediction uses no padding. Outside, the prediction blends in zeros (``padding_mode
    ="zeros"``). Integer flows reproduce the reference inside the mask: bit-exact when ``h``
    and ``w`` are powers of two, else up to the float rounding of grid_sample's coordinate
    normalisation (interpolation weights off by ~1 ulp). Source positions are computed in at
    least float32 whatever the inputs' dtype; ``grid_sample`` runs with ``align_corners=False``
    (see the module conventions). ``check=False`` skips the NaN/inf test of the flow (a host
    sync).
    """
    flow = _check_pair(reference, flow)
    B, _, h, w = reference.shape
    if flow.device != reference.device:
        raise InputError(
            f"motion: the flow is on {flow.device}, the reference on {reference.device}"
        )
    if mode not in WARP_MODES:
        raise InputError(f"motion: unknown warp mode {mode!r}, expected {WARP_MODES}")
    if check:
        _check_finite(flow, "flow")
    ct = _coord_dtype(torch.promote_types(flow.dtype, reference.dtype))
    jx = torch.arange(w, device=flow.device, dtype=ct)
    iy = torch.arange(h, device=flow.device, dtype=ct)
    src_x = flow[:, 0].to(ct) + jx  # source point, in pixel-index units (centre of pixel j = j)
    src_y = flow[:, 1].to(ct) + iy[:, None]
    tol = MASK_TOLERANCE
    mask = (src_x >= -tol) & (src_x <= w - 1 + tol) & (src_y >= -tol) & (src_y <= h - 1 + tol)
    # index j ↦ continuous j + 0.5 ↦ normalised (2(j + 0.5) / w) - 1   (align_corners=False)
    grid = torch.stack(((2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1), dim=-1)
    return _sample(reference, grid, mode, "zeros"), mask.unsqueeze(1)


WARP_FRACTION_BITS = 4
"""Sub-pixel precision of :func:`exact_warp`: source points on a 1/16-pixel grid."""


def exact_warp(reference: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`warp` in fixed point, the same on every device: ``reference`` (B, C, h, w) holds
    fixed-point integers (:mod:`codec.exact`, float64), ``flow`` (B, 2, h, w) is the decoded
    latent flow (float32, computed on the CPU from the side information's integers).

    Each source point is rounded to the 1/16-pixel grid (``WARP_FRACTION_BITS``), its
    bilinear weights are integers summing to 256, the weighted sum of integer values is exact
    in float64 and is rounded back to the reference's fixed point. Outside the reference,
    zeros (as :func:`warp`); the mask is True where the rounded point lies within the pixel
    centres. Returns the prediction (fixed point, on the reference's device) and the mask.
    """
    flow = _check_pair(reference, flow)
    B, C, h, w = reference.shape
    _check_finite(flow, "flow")
    if reference.numel() and float(reference.abs().max()) >= 2.0**44:
        raise RangeExceeded("a reference value is beyond the range of the exact warp (2^44)")
    one = 1 << WARP_FRACTION_BITS
    f = flow.detach().to("cpu", torch.float64)
    # source points in 1/16 px: exact products and sums of small integers and dyadic values
    sx = torch.round((f[:, 0] + torch.arange(w, dtype=torch.float64)) * one).to(torch.int64)
    sy = torch.round((f[:, 1] + torch.arange(h, dtype=torch.float64)[:, None]) * one)
    sy = sy.to(torch.int64)
    mask = (sx >= 0) & (sx <= (w - 1) * one) & (sy >= 0) & (sy <= (h - 1) * one)
    x0, y0 = torch.div(sx, one, rounding_mode="floor"), torch.div(sy, one, rounding_mode="floor")
    fx, fy = sx - x0 * one, sy - y0 * one
    device = reference.device
    flat = reference.to(torch.float64).reshape(B, C, h * w)
    total = torch.zeros(B, C, h * w, dtype=torch.float64, device=device)
    for dy, wy in ((0, one - fy), (1, fy)):
        for dx, wx in ((0, one - fx), (1, fx)):
            xs, ys = x0 + dx, y0 + dy
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).reshape(B, 1, h * w)
            weight = (wx * wy * inside).reshape(B, 1, h * w).to(device, torch.float64)
            picked = flat.gather(2, index.to(device).expand(B, C, h * w))
            total += picked * weight
    out = round_shift(total, 2 * WARP_FRACTION_BITS)
    return out.reshape(B, C, h, w), mask.unsqueeze(1).to(device)
