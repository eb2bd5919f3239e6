"""Motion at the edge: where a P-frame's motion comes from.

The video codec predicts a frame's feature tensor by warping the previous decoded tensor with
the *input* motion rescaled by the layer's stride (:mod:`codec.motion`). That motion has to be
found on the edge device and sent to the server as side information, ahead of the tensor
residual. Every flow and affine here follows :mod:`codec.motion`'s conventions: backward
motion (``target(p) = reference(p + flow(p))``), flows ``(B, 2, H, W)`` with channel 0 = x,
pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``, an affine ``theta`` mapping target points
to reference points::

    camera metadata      ─ camera_affine ──────────────────────────▶ affine theta
    frames x_{t−1}, x_t  ─ estimate_flow (DIS) ─▶ dense flow ─┬─ global_affine ─▶ affine theta
                                                              └─ MotionCoder.coarse ─▶ coarse flow
      ─▶ MotionCoder.quantize, encode (codec.motion_side_info) ─▶ side information ─▶ server
      ─▶ MotionCoder.decode ─▶ latent_motion (codec.latent_motion) ─▶ warp (codec.motion)

Sources
-------
* **Metadata affine** — when the camera motion is known (a gimbal, a pan–tilt–zoom
  controller, or the synthetic clips' ``camera`` field), :func:`camera_affine` turns it into
  the backward affine from frame ``t`` to frame ``t − 1``. No image analysis at all.
* **Optical flow** — :func:`estimate_flow` runs OpenCV's DIS optical flow (Kroeger et al.,
  "Fast Optical Flow using Dense Inverse Search", ECCV 2016) on 8-bit grayscale frames. The
  dense flow is either reduced to a robust global affine (:func:`global_affine`: RANSAC over
  a sparse grid of flow vectors, so independently moving objects are outliers) or sent as a
  coarse block-averaged flow (:meth:`codec.motion_side_info.MotionCoder.coarse`), which also
  carries object motion.

Which of these a codec uses is its motion source (:data:`codec.sequence.MOTION_SOURCES`).
"""

from __future__ import annotations

import math
from numbers import Integral

import cv2
import numpy as np
import torch
from torch import Tensor

from featcodec.codec.errors import InputError

__all__ = ["camera_affine", "estimate_flow", "global_affine"]

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
MIN_FLOW_SIZE = 12  # px: DIS refuses smaller frames
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def _frames(x: object, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"edge motion: the {what} must be (3, H, W) or (B, 3, H, W), not {shape}")
    if not x.is_floating_point():
        raise InputError(f"edge motion: the {what} must be a float image in [0, 1], not {x.dtype}")
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"edge motion: the {what} contains NaN or infinite values")
    return x


def _gray8(x: Tensor) -> np.ndarray:
    """8-bit BT.601 luma ``(B, H, W)`` of RGB frames ``(B, 3, H, W)`` in [0, 1]."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    luma = (x.detach().to("cpu", torch.float32) * w).sum(dim=1)
    return luma.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).numpy()


def estimate_flow(reference: Tensor, target: Tensor, preset: str = "medium") -> Tensor:
    """Backward optical flow from ``target`` to ``reference`` with OpenCV's DIS.

    Args:
        reference, target: frames ``(3, H, W)`` or ``(B, 3, H, W)``, float RGB in [0, 1]
            (values outside are clipped), at least 12 px on each side.
        preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"``.

    Returns:
        ``(B, 2, H, W)`` float32 on ``reference``'s device, in input pixels, such that
        ``target(p) ≈ reference(p + flow(p))`` (the :mod:`codec.motion` convention). DIS
        computes ``I0(p) ≈ I1(p + flow(p))``, so ``I0`` is the target and ``I1`` the reference.
    """
    if preset not in DIS_PRESETS:
        raise InputError(
            f"edge motion: unknown DIS preset {preset!r}, expected {tuple(DIS_PRESETS)}"
        )
    ref = _frames(reference, "reference")
    tgt = _frames(target, "target")
    if ref.shape != tgt.shape:
        raise InputError(
            f"edge motion: the reference {tuple(ref.shape)} and target {tuple(tgt.shape)} differ"
        )
    H, W = ref.shape[-2:]
    if min(H, W) < MIN_FLOW_SIZE:
        raise InputError(f"edge motion: frames of {H}×{W} px are too small for DIS (min 12)")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flows = [dis.calc(t, r, None) for r, t in zip(_gray8(ref), _gray8(tgt), strict=True)]
    flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
    return flow.to(device=reference.device, dtype=torch.float32)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def global_affine(flow: Tensor, step: int = 4, threshold: float = 1.0) -> Tensor:
    """A robust global affine ``(B, 2, 3)`` fitted to a dense backward ``flow`` (B, 2, H, W).

    The flow is sampled at the centres of every ``step``-th pixel (starting ``step // 2`` px
    in), each sample giving a correspondence ``p ↦ p + flow(p)``, and
    ``cv2.estimateAffine2D`` fits a full affine with RANSAC (reprojection threshold
    ``threshold`` px) followed by its Levenberg–Marquardt refinement on the inliers. The
    result maps target points to reference points in continuous coordinates (centres at
    +0.5), so ``codec.motion.affine_flow(theta, (H, W))`` reproduces the dominant motion.

    Fallback: when RANSAC finds no model (fewer than three samples, degenerate geometry) or a
    non-finite one, the result is the pure translation by the mean sampled flow. The result
    is float32 on ``flow``'s device.
    """
    if not isinstance(flow, Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
        raise InputError(f"edge motion: the flow must have shape (B, 2, H, W), not {shape}")
    if not flow.is_floating_point():
        raise InputError(f"edge motion: the flow must be a floating-point tensor, not {flow.dtype}")
    if isinstance(step, bool) or not isinstance(step, Integral) or step < 1:
        raise InputError(f"edge motion: the sampling step must be an integer >= 1, not {step!r}")
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0):
        raise InputError(f"edge motion: the RANSAC threshold must be > 0, not {threshold!r}")
    if not bool(torch.isfinite(flow).all()):
        raise InputError("edge motion: the flow contains NaN or infinite values")
    H, W = flow.shape[-2:]
    s = int(step)
    rows, cols = np.arange(s // 2, H, s), np.arange(s // 2, W, s)
    if len(rows) == 0:
        rows = np.arange(H // 2, H // 2 + 1)
    if len(cols) == 0:
        cols = np.arange(W // 2, W // 2 + 1)
    yy, xx = np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij")
    src = np.stack([xx.reshape(-1), yy.reshape(-1)], axis=1)  # (N, 2) x, y
    f64 = flow.detach().to("cpu", torch.float64)
    sampled = f64[:, :, torch.from_numpy(rows)][:, :, :, torch.from_numpy(cols)].numpy()
    thetas = []
    for f in sampled:
        disp = f.reshape(2, -1).T  # (N, 2)
        model = None
        if len(src) >= 3:
            model, _ = cv2.estimateAffine2D(
                src, src + disp, method=cv2.RANSAC, ransacReprojThreshold=float(threshold)
            )
        if model is None or not np.isfinite(model).all():
            model = _translation(*disp.mean(axis=0).tolist())
        thetas.append(model)
    return torch.from_numpy(np.stack(thetas)).to(device=flow.device, dtype=torch.float32)


def camera_affine(camera: Tensor, t: int) -> Tensor:
    """The backward affine ``(2, 3)`` float32 from frame ``t`` to frame ``t − 1`` of a
    synthetic clip, ``cam_{t−1} ∘ cam_t⁻¹``, from its ``camera`` metadata ``(T, 2, 3)``
    (frame-0 → frame-``t`` pixel maps of static points).

    ``training.datasets.synthetic`` renders pixel ``(i, j)`` at its centre ``(j + 0.5,
    i + 0.5)`` and rotates and scales about ``(W/2, H/2)`` in those coordinates: the same
    continuous coordinates as :mod:`codec.motion`, so no conversion is needed.
    """
    if not isinstance(camera, Tensor) or camera.dim() != 3 or tuple(camera.shape[1:]) != (2, 3):
        shape = tuple(camera.shape) if isinstance(camera, Tensor) else type(camera).__name__
        raise InputError(f"edge motion: the camera must have shape (T, 2, 3), not {shape}")
    if isinstance(t, bool) or not isinstance(t, Integral) or not 1 <= t < camera.shape[0]:
        raise InputError(
            f"edge motion: frame {t!r} has no previous frame in a {camera.shape[0]}-frame camera"
        )
    cams = camera.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(cams).all():
        raise InputError("edge motion: the camera contains NaN or infinite values")
    last = np.array([[0.0, 0.0, 1.0]])
    current = np.concatenate([cams[t], last])
    previous = np.concatenate([cams[t - 1], last])
    if abs(np.linalg.det(current)) < 1e-12:
        raise InputError(f"edge motion: the camera map of frame {t} is not invertible")
    theta = previous @ np.linalg.inv(current)
    return torch.from_numpy(theta[:2]).to(torch.float32)
