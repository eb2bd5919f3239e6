"""``featcodec eval motion``: how well input motion predicts a CNN's feature tensor.

The experiment of M. Ulhaq and I. V. Bajić, "Latent Space Motion Analysis for Collaborative
Intelligence" (ICASSP 2021), section "Tensor reconstruction experiments": a reference image
and an affine transform of it go through the front of a split network (ResNet-34 up to its
``add_3``, stride ``s = 8``: torchvision's ``layer2.0.add``; the default ``layer2.0`` is that
block's output after its ReLU); the target tensor is predicted from the reference tensor alone by
warping it with the input motion rescaled to the layer, ``ṽ(x) = v(s·x)/s`` (for an affine
map, :func:`codec.motion.latent_affine`). The paper reports NRMSE ≈ 0.04 over random affine
transforms. Every coordinate follows the conventions of :mod:`codec.motion`.

What is computed, exactly:

* **Images.** The reference image ``I`` (3, H, W), in [0, 1], is normalized with the ImageNet
  statistics *before* it is moved: ``target = warp(norm(I), affine_flow(θ, (H, W)))``
  (bilinear). The uncovered area is thus filled with 0 in the normalized domain, i.e. the
  ImageNet mean colour: the value the network's own convolutions pad with at the frame, so
  the uncovered area looks like "outside the picture" rather than like a black object.
* **Transforms.** ``θ`` (2×3) is the *backward* map (target pixel → reference point) of the
  forward map ``p' = c + R(α)·Sh(φx, φy)·S(sx, sy)·(p − c) + (tx, ty)`` about the image centre
  ``c``: scale first, then shear ``Sh = [[1, tan φx], [tan φy, 1]]``, then rotation
  ``R(α) = [[cos α, −sin α], [sin α, cos α]]`` (y points down, so ``α > 0`` turns clockwise on
  screen), then translation. Random draws are uniform and independent in every parameter:
  ``tx, ty`` ±32 px, ``sx, sy`` 0.95–1.05, ``φx, φy`` ±5°, ``α`` ±10° (the paper's ranges).
* **Prediction.** ``ŷ = warp(y_ref, affine_flow(latent_affine(θ, s), (h, w)))`` (bilinear), the
  stride ``s = H / h = W / w`` being inferred from the tensor (it must be the layer's own
  stride exactly, i.e. ``s`` must divide the image size). The *no-motion baseline* predicts
  ``y_ref`` itself.
* **Valid positions.** A latent pixel counts when (a) the prediction's source point lies within
  the reference tensor's pixel centres (the mask of :func:`codec.motion.warp`: no zero padding
  blended in) and (b) its whole footprint in the target image, the ``s × s`` input pixels it
  covers, is covered by the reference (every target pixel's bilinear source lies within the
  reference's pixel centres). (b) is stricter than "the receptive centre is covered": when
  ``s`` divides ``H`` and ``W``, (a) already implies that the centre is covered, so the centre
  test would add nothing, while a latent pixel half over the uncovered area would be compared
  with content that exists in no reference. ``margin = m`` further drops every position within
  ``m`` latent pixels of an invalid one or of the tensor's edge (the convolutions' zero padding
  and the uncovered area disturb a few latent pixels around them); the default ``m = 0`` is the
  paper's plain "valid positions".
* **NRMSE** = RMSE over the valid positions (all channels) / (max − min of the whole target
  tensor), per transform; undefined (NaN) when no position is valid.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.codec.errors import InputError
from featcodec.codec.motion import affine_flow, latent_affine, warp
from featcodec.eval.motion_setup import load_front, load_image
from featcodec.models.equivariance import DESCRIPTORS, FilterBank, LinearFit, motion_descriptors

PAPER = (
    'M. Ulhaq and I. V. Bajić, "Latent Space Motion Analysis for Collaborative Intelligence", '
    "ICASSP 2021"
)
PARAMS = ("tx", "ty", "sx", "sy", "shear_x", "shear_y", "rotation")
"""The transform parameters, in the column order of a parameter tensor ``(N, 7)``."""
IDENTITY = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0)
RANGES: dict[str, tuple[float, float]] = {
    "tx": (-32.0, 32.0),  # px
    "ty": (-32.0, 32.0),
    "sx": (0.95, 1.05),  # factor
    "sy": (0.95, 1.05),
    "shear_x": (-5.0, 5.0),  # degrees
    "shear_y": (-5.0, 5.0),
    "rotation": (-10.0, 10.0),  # degrees
}
SWEEPS: dict[str, tuple[str, dict[str, str], int]] = {
    # family: (unit, {curve: parameter}, points); translation in 2 px steps, so that every
    # multiple of the stride (8) is on the curve
    "translation": ("px", {"x": "tx", "y": "ty"}, 33),
    "scale": ("factor", {"x": "sx", "y": "sy"}, 21),
    "shear": ("degrees", {"x": "shear_x", "y": "shear_y"}, 21),
    "rotation": ("degrees", {"angle": "rotation"}, 21),
}
TARGET_RATIO = 0.70  # the goal: prediction NRMSE ≤ 70 % of the baseline's


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def affine_theta(params: Tensor, size: tuple[int, int]) -> Tensor:
    """Backward maps ``θ`` (N, 2, 3), float64, of the transforms ``params`` (N, 7) (columns
    :data:`PARAMS`, angles in degrees) of an image of ``size = (H, W)``: the convention of
    :func:`codec.motion.affine_flow` (target point ↦ reference point, pixel centres at
    ``j + 0.5``). See the module docstring for the composition."""
    p = params.to(torch.float64)
    tx, ty, sx, sy, shx, shy, rot = p.unbind(-1)
    shx, shy, rot = (torch.deg2rad(a) for a in (shx, shy, rot))
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    scale = torch.stack((sx, zero, zero, sy), -1).view(-1, 2, 2)
    shear = torch.stack((one, torch.tan(shx), torch.tan(shy), one), -1).view(-1, 2, 2)
    c, s = torch.cos(rot), torch.sin(rot)
    rotation = torch.stack((c, -s, s, c), -1).view(-1, 2, 2)
    inverse = torch.linalg.inv(rotation @ shear @ scale)  # target offsets → reference offsets
    centre = torch.tensor([size[1] / 2, size[0] / 2], dtype=torch.float64)
    shift = torch.stack((tx, ty), -1)
    offset = centre - (inverse @ (centre + shift).unsqueeze(-1)).squeeze(-1)
    return torch.cat((inverse, offset.unsqueeze(-1)), dim=-1)


def random_params(n: int, seed: int) -> Tensor:
    """``n`` transforms (n, 7), every parameter uniform in its :data:`RANGES`, float64."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([RANGES[k][0] for k in PARAMS], dtype=torch.float64)
    hi = torch.tensor([RANGES[k][1] for k in PARAMS], dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n, len(PARAMS), generator=g, dtype=torch.float64)


def sweep_params(param: str, points: int) -> tuple[list[float], Tensor]:
    """``points`` values evenly across ``param``'s range, the others at the identity; returns
    the values and the transforms (points, 7)."""
    lo, hi = RANGES[param]
    values = torch.linspace(lo, hi, points, dtype=torch.float64)
    params = torch.tensor(IDENTITY, dtype=torch.float64).repeat(points, 1)
    params[:, PARAMS.index(param)] = values
    return [round(v, 6) for v in values.tolist()], params


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def infer_stride(
    image_size: tuple[int, int], tensor_size: tuple[int, int], layer: str, nominal: int
) -> int:
    """The stride ``H / h = W / w``; ``InputError`` unless it is the layer's ``nominal``
    stride exactly (a size the stride does not divide gives ``h = ⌈H/s⌉``, a ratio that is
    not an integer or, for tiny images, the wrong one: 14 px → 2 latent px is not stride 7)."""
    (H, W), (h, w) = image_size, tensor_size
    if (H, W) != (nominal * h, nominal * w):
        raise InputError(
            f"layer {layer!r} (stride {nominal}) maps a {H}×{W} image to a {h}×{w} tensor: "
            f"not one integer stride (choose an --image-size that {nominal} divides)"
        )
    return nominal


def nrmse(pred: Tensor, target: Tensor, valid: Tensor, value_range: Tensor) -> Tensor:
    """Per-sample RMSE over the valid positions (all channels) / the target's range."""
    weight = valid.to(target.dtype)
    count = weight.sum(dim=(1, 2, 3)) * target.shape[1]
    sq = ((pred - target) ** 2 * weight).sum(dim=(1, 2, 3))
    rmse = torch.sqrt(sq / count)  # 0/0 = NaN when nothing is valid
    return torch.where(value_range > 0, rmse / value_range, torch.full_like(rmse, math.nan))


def valid_positions(pred_mask: Tensor, image_mask: Tensor, stride: int, margin: int) -> Tensor:
    """Valid latent positions (B, 1, h, w): the module docstring's (a) ∧ (b), eroded by
    ``margin`` latent pixels (the tensor's edge counting as invalid)."""
    uncovered = F.max_pool2d((~image_mask).float(), stride, stride)  # any uncovered pixel
    valid = pred_mask & (uncovered == 0)
    if margin > 0:
        invalid = F.pad((~valid).float(), (margin,) * 4, value=1.0)
        valid = F.max_pool2d(invalid, 2 * margin + 1, stride=1) == 0
    return valid


@torch.no_grad()
def measure(
    front: nn.Module,
    image: Tensor,
    params: Tensor,
    stride: int,
    margin: int = 0,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
    bank: FilterBank | None = None,
    fit: LinearFit | None = None,
) -> dict[str, list[float]]:
    """NRMSE of the motion prediction and of the no-motion baseline for each transform.

    Args:
        front: normalized images (B, 3, H, W) → tensors (B, C, h, w), in eval mode.
        image: the normalized reference image (1, 3, H, W), on the front's device.
        params: transforms (N, 7), columns :data:`PARAMS`.
        stride: the layer's stride (``H = s·h``).
        margin: see the module docstring.
        batch_size: transforms per forward pass.
        on_batch: called with the number of transforms done after each batch (progress).
        bank: a motion-conditioned filter bank refining the prediction (Lenc & Vedaldi's
            equivariance map, :mod:`models.equivariance`): its NRMSE is added as ``refined``.
        fit: instead, accumulate the regression that fits ``bank`` (valid positions).

    Returns:
        ``prediction``, ``baseline`` (NRMSE) and ``valid_fraction`` lists, one value per row
        (and ``refined`` with a bank).
    """
    H, W = image.shape[-2:]
    reference = front(image)
    h, w = reference.shape[-2:]
    out: dict[str, list[float]] = {"prediction": [], "baseline": [], "valid_fraction": []}
    if bank is not None and fit is None:
        out["refined"] = []
    for start in range(0, len(params), batch_size):
        theta = affine_theta(params[start : start + batch_size], (H, W))
        theta = theta.to(device=image.device, dtype=torch.float32)
        B = theta.shape[0]
        target_image, image_mask = warp(image.expand(B, -1, -1, -1), affine_flow(theta, (H, W)))
        target = front(target_image)
        ref = reference.expand(B, -1, -1, -1)
        latent = affine_flow(latent_affine(theta, stride), (h, w))
        prediction, pred_mask = warp(ref, latent)
        valid = valid_positions(pred_mask, image_mask, stride, margin)
        if bank is not None:
            descriptors = motion_descriptors(latent)
            if fit is not None:
                fit.update(bank.design(prediction, descriptors), target, valid)
            else:
                refined = bank(prediction, descriptors)
        value_range = target.amax(dim=(1, 2, 3)) - target.amin(dim=(1, 2, 3))
        out["prediction"] += nrmse(prediction, target, valid, value_range).tolist()
        out["baseline"] += nrmse(ref, target, valid, value_range).tolist()
        if "refined" in out:
            out["refined"] += nrmse(refined, target, valid, value_range).tolist()
        out["valid_fraction"] += valid.float().mean(dim=(1, 2, 3)).tolist()
        if on_batch is not None:
            on_batch(B)
    return out


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionConfig:
    """Settings of :func:`run_motion` (``featcodec eval motion``'s options)."""

    backbone: str = "resnet34"
    layer: str = "layer2.0"
    weights: str | None = None  # torchvision weights name; None = random init (seeded)
    weights_file: str | None = None  # a local state_dict of the whole backbone
    image: str | None = None  # an image file; None = synthetic scene ``seed``
    image_size: int = 224  # images are (stretched to) image_size × image_size
    draws: int = 1000
    seed: int = 0  # scene, random init and draws
    margin: int = 0
    batch_size: int = 32
    device: str = "cpu"
    refine: int = 0  # k of a motion-conditioned filter bank on the warp (0: none)
    fit_draws: int = 256  # the bank's fitting draws (seed + 1), not the measured ones

    def check(self) -> None:
        """``InputError`` for values out of range."""
        for name in ("image_size", "draws", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be positive")
        if self.margin < 0:
            raise InputError("--margin must be 0 or more")
        if self.refine < 0 or (self.refine and self.refine % 2 == 0):
            raise InputError(f"--refine must be 0 or an odd kernel size, not {self.refine}")
        if self.refine and self.fit_draws < 2:
            raise InputError("--fit-draws must be at least 2")
        if self.weights is not None and self.weights_file is not None:
            raise InputError("give --weights or --weights-file, not both")


def run_motion(cfg: MotionConfig, progress: bool = True) -> dict[str, Any]:
    """Run the experiment; returns the JSON-ready report (settings, sweeps, draws, summary).

    Every input is checked (image, backbone, weights, layer, stride) before the long part."""
    cfg.check()
    start = time.perf_counter()
    image, source = load_image(cfg.image, cfg.image_size, cfg.seed)
    front, weights, nominal = load_front(
        cfg.backbone, cfg.layer, cfg.weights, cfg.weights_file, cfg.seed
    )
    front = front.to(cfg.device)
    image = image.to(cfg.device)
    with torch.no_grad():
        shape = tuple(front(image).shape[1:])
    stride = infer_stride(tuple(image.shape[-2:]), shape[-2:], cfg.layer, nominal)
    bank = None
    if cfg.refine:  # fitted in closed form on other draws than those measured
        bank = FilterBank(shape[0], len(DESCRIPTORS), cfg.refine).to(cfg.device)
        fit = LinearFit(bank.design_features, shape[0])
        fitting = random_params(cfg.fit_draws, cfg.seed + 1)
        measure(front, image, fitting, stride, cfg.margin, cfg.batch_size, bank=bank, fit=fit)
        bank.load_fit(*fit.solve())

    sweeps: dict[str, Any] = {}
    for family, (unit, curves, points) in SWEEPS.items():
        sweeps[family] = {"unit": unit, "curves": {}}
        for curve, param in curves.items():
            values, params = sweep_params(param, points)
            result = measure(front, image, params, stride, cfg.margin, cfg.batch_size, bank=bank)
            sweeps[family]["curves"][curve] = {"parameter": param, "values": values, **result}
    sweep_s = time.perf_counter() - start

    params = random_params(cfg.draws, cfg.seed)
    with _progress(cfg.draws, progress) as bar:
        draws = measure(
            front, image, params, stride, cfg.margin, cfg.batch_size, bar.update, bank=bank
        )
    draws["params"] = {
        k: [round(v, 6) for v in params[:, i].tolist()] for i, k in enumerate(PARAMS)
    }
    total_s = time.perf_counter() - start
    return {
        "experiment": "latent motion",
        "paper": PAPER,
        "settings": {
            **asdict(cfg),
            "weights_used": weights,
            "image_source": source,
            "stride": stride,
            "tensor_shape": list(shape),
            "ranges": {k: list(v) for k, v in RANGES.items()},
            "warp": "bilinear; images warped after ImageNet normalization (fill = mean colour)",
            "valid_positions": "warp mask of the prediction ∧ s×s footprint covered in the "
            "target image, eroded by margin latent pixels (see eval/motion.py)",
        },
        "sweeps": sweeps,
        "draws": draws,
        "summary": summarize(draws),
        "timing_s": {
            "total": total_s,
            "sweeps": sweep_s,
            "draws": total_s - sweep_s,
            "ms_per_image": 1e3 * (total_s - sweep_s) / cfg.draws,
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.processor() or platform.machine(),
    }


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="affine draws", unit="img", disable=None if enabled else True)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 or NaN."""
    return a / b if b else math.nan


def nrmse_stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, median and max of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "median": math.nan, "max": math.nan}
    return {
        "mean": statistics.fmean(finite),
        "median": statistics.median(finite),
        "max": max(finite),
    }


def summarize(draws: dict[str, list[float]]) -> dict[str, Any]:
    """Mean/median NRMSE of prediction and baseline over the transforms with a defined NRMSE
    in both, their ratios, and whether the mean ratio meets :data:`TARGET_RATIO`."""
    pairs = [
        (p, b)
        for p, b in zip(draws["prediction"], draws["baseline"], strict=True)
        if math.isfinite(p) and math.isfinite(b)
    ]
    pred = nrmse_stats([p for p, _ in pairs])
    base = nrmse_stats([b for _, b in pairs])
    ratio_mean = ratio(pred["mean"], base["mean"])
    extra: dict[str, Any] = {}
    if "refined" in draws:
        finite = [
            (r, p) for r, p in zip(draws["refined"], draws["prediction"], strict=True)
            if math.isfinite(r) and math.isfinite(p)
        ]  # fmt: skip
        refined = nrmse_stats([r for r, _ in finite])
        warped = nrmse_stats([p for _, p in finite])
        extra = {"refined": refined, "refined_to_warp": ratio(refined["mean"], warped["mean"])}
    return {
        **extra,
        "prediction": pred,
        "baseline": base,
        "ratio_mean": ratio_mean,
        "ratio_median": ratio(pred["median"], base["median"]),
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio_mean <= TARGET_RATIO),
        "count": len(pairs),
        "undefined": len(draws["prediction"]) - len(pairs),
        "valid_fraction_mean": statistics.fmean(draws["valid_fraction"]),
    }
