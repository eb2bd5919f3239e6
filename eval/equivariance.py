"""``featcodec eval equivariance``: how each layer of a network reflects image transformations.

The experiment of K. Lenc and A. Vedaldi, "Understanding image representations by measuring
their equivariance and equivalence" (CVPR 2015), on featcodec's split networks. For every
split point (after the stem and after each stage) and every transformation ``g``
(:data:`models.equivariance.TRANSFORMATIONS` and the random affine of ``eval motion``):

* **Forward map** ``φ(gx) ≈ M_g φ(x)``, ``M_g`` = the warp by ``g`` at the layer's stride
  (:func:`codec.motion.warp`) followed by a filter bank (:class:`~models.equivariance.FilterBank`,
  1×1 as in the paper and 3×3) fitted in closed form on training images
  (:class:`~models.equivariance.LinearFit`); for the random affine, which differs from draw to
  draw, the bank is conditioned on each draw's motion descriptors
  (:func:`~models.equivariance.motion_descriptors`; ``--fixed-affine``: one bank for every
  draw). On held-out images: NRMSE of (a) no motion,
  ``φ(x)`` itself, (b) the warp only, (c) warp + map, over the valid positions of
  :func:`eval.motion.valid_positions` (RMSE / the target tensor's range, as ``eval motion``).
* **Inverse map and the task** ``back(M_g⁻¹ φ(gx))``, ``M_g⁻¹`` = the warp by ``g⁻¹`` and a 1×1
  bank: the task metric against the labels of ``x`` of the original network on ``x``, of the
  network on ``gx`` (no map), warp only, the closed-form map ("before training") and the map
  after training with the task loss ("after training"), as in the paper's bar charts.

Two settings. Default: a trained task network (``--task-checkpoint``, e.g. the demo's) on the
synthetic scenes, training images from the train split, held-out ones from the test split.
``--image``: a photo and a torchvision backbone (random init or ``--weights-file``); images are
random crops of the photo, there are no labels, and the "task metric" is the agreement of the
top-1 class with the network's own on ``x``. Affine translations are the paper's ±32 px
scaled to the image size (``±32·size/224``).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.codec.errors import InputError
from featcodec.codec.motion import affine_flow, latent_affine, warp
from featcodec.eval.equivariance_report import mean_finite, summarize
from featcodec.eval.motion import RANGES, affine_theta, nrmse, random_params, valid_positions
from featcodec.models.equivariance import (
    DESCRIPTORS,
    TRANSFORMATIONS,
    FilterBank,
    LinearFit,
    invert_theta,
    motion_descriptors,
    transformation_theta,
)

log = logging.getLogger(__name__)

PAPER = (
    'K. Lenc and A. Vedaldi, "Understanding image representations by measuring their '
    'equivariance and equivalence", CVPR 2015'
)
ALL_TRANSFORMATIONS = (*TRANSFORMATIONS, "affine")
STAGES = ("maxpool", "layer1", "layer2", "layer3", "layer4")
"""The split points of a ResNet: after the stem, then after each stage."""


@dataclass(frozen=True)
class EquivarianceConfig:
    """Settings of :func:`run_equivariance` (``featcodec eval equivariance``'s options)."""

    task_checkpoint: str | None = None  # a trained task network (synthetic scenes)
    image: str | None = None  # a photo instead (with ``backbone``)
    backbone: str = "resnet34"
    weights_file: str | None = None  # a local state_dict of ``backbone`` (else random init)
    layers: tuple[str, ...] | None = None  # None: the STAGES whose stride divides the size
    transformations: tuple[str, ...] = ALL_TRANSFORMATIONS
    kernels: tuple[int, ...] = (1, 3)
    # the random affine's maps: one bank conditioned on the motion descriptors of each draw
    # (Lenc & Vedaldi's "continuous case"); False: one fixed bank for every draw
    condition_affine: bool = True
    image_size: int | None = None  # 48 for the scenes (the demo network's size), 224 a photo
    train_images: int = 256
    test_images: int = 128
    ridge: float | None = None  # relative ridge penalty; None: chosen by cross-validation
    task_steps: int = 100  # steps of the inverse map's training with the task loss
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"

    @property
    def size(self) -> int:
        return self.image_size or (224 if self.image else 48)

    def check(self) -> None:
        """``InputError`` for values out of range or an ambiguous source."""
        if (self.task_checkpoint is None) == (self.image is None):
            raise InputError("give a task checkpoint (synthetic scenes) or --image, not both")
        for name in ("train_images", "test_images", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be positive")
        if self.task_steps < 0 or not self.lr > 0:
            raise InputError("--task-steps must be ≥ 0 and --lr positive")
        if self.ridge is not None and not (self.ridge >= 0 and math.isfinite(self.ridge)):
            raise InputError(f"--ridge must be a number ≥ 0, not {self.ridge}")
        if self.size < 16:
            raise InputError("--image-size must be at least 16")
        unknown = [t for t in self.transformations if t not in ALL_TRANSFORMATIONS]
        if unknown or not self.transformations:
            raise InputError(
                f"unknown transformation {unknown[0] if unknown else '(none)'!r}; "
                f"known: {', '.join(ALL_TRANSFORMATIONS)}"
            )
        if self.layers is not None and not self.layers:
            raise InputError("give at least one layer")
        if any(k < 1 or k % 2 == 0 for k in self.kernels) or not self.kernels:
            raise InputError(f"kernel sizes must be odd and positive, not {self.kernels}")


# --------------------------------------------------------------------------------------------
# Networks and images
# --------------------------------------------------------------------------------------------


@dataclass
class Network:
    """The network under study: ``split(layer)`` gives (front, back, stride); ``task`` is None
    for a photo (agreement with the network's own top-1 instead of a task metric)."""

    model: nn.Module
    task: Any
    num_classes: int
    description: str
    split_fn: Callable[[nn.Module, str], Any] = field(repr=False)

    def split(self, layer: str) -> tuple[nn.Module, nn.Module, int]:
        s = self.split_fn(self.model, layer)
        return s.front.eval(), s.back.eval(), s.stride


def load_network(cfg: EquivarianceConfig) -> Network:
    """The task network of ``cfg.task_checkpoint`` or ``cfg.backbone`` (with its weights
    file), in eval mode, frozen."""
    from featcodec.eval.motion_setup import weights_from_file
    from featcodec.models.backbones import build_backbone
    from featcodec.models.tasks import get_task, task_of
    from featcodec.training.task import read_task_network, split_network

    if cfg.task_checkpoint is not None:
        arch, model = read_task_network(cfg.task_checkpoint)
        task = task_of(arch)
        what = f"{task.name} {arch['backbone']} from {cfg.task_checkpoint}"
        split_fn = lambda m, layer: split_network(task, m, layer, arch["backbone"])  # noqa: E731
        num_classes = int(arch["num_classes"])
    else:
        torch.manual_seed(cfg.seed)
        try:
            model = build_backbone(cfg.backbone)
        except ValueError as e:
            raise InputError(str(e)) from None
        if cfg.weights_file is not None:
            weights_from_file(model, cfg.weights_file, cfg.backbone)
        task, num_classes = None, 0
        init = f"weights {cfg.weights_file}" if cfg.weights_file else f"random init {cfg.seed}"
        what = f"{cfg.backbone} ({init})"
        classifier = get_task("classification")
        split_fn = lambda m, layer: split_network(classifier, m, layer, cfg.backbone)  # noqa: E731
    model = model.to(cfg.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Network(model, task, num_classes, what, split_fn)


def _crops(path: str, size: int, count: int, seed: int) -> Tensor:
    """``count`` random square crops (side 40–100 % of the photo's shorter side) resized to
    ``size`` (count, 3, size, size) in [0, 1]."""
    from featcodec.training.datasets.files import read_rgb

    photo = read_rgb(path)
    h, w = photo.shape[-2:]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        side = max(8, int(min(h, w) * (0.4 + 0.6 * float(torch.rand((), generator=g)))))
        i = int(torch.randint(0, h - side + 1, (), generator=g))
        j = int(torch.randint(0, w - side + 1, (), generator=g))
        crop = photo[:, i : i + side, j : j + side].unsqueeze(0)
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
    return torch.cat(out).clamp_(0, 1)


def image_batches(cfg: EquivarianceConfig, split: str) -> list[dict[str, Any]]:
    """The training (``split="train"``) or held-out images in batches (dicts with ``image``
    in [0, 1] and, for the scenes, the task's targets)."""
    count = cfg.train_images if split == "train" else cfg.test_images
    if cfg.image is not None:
        images = _crops(cfg.image, cfg.size, count, cfg.seed + (0 if split == "train" else 1))
        return [{"image": b} for b in images.split(cfg.batch_size)]
    from featcodec.eval.data import synthetic_eval_set

    data = synthetic_eval_set(split, count, cfg.size, cfg.seed)
    return list(data.batches(cfg.batch_size))


def thetas(name: str, size: int, count: int, seed: int) -> Tensor:
    """Backward maps (count, 2, 3) float32 of transformation ``name`` on ``size`` px images;
    ``"affine"``: ``eval motion``'s random draws, translations scaled to the size."""
    if name != "affine":
        return transformation_theta(name, (size, size), count).float()
    params = random_params(count, seed)
    params[:, :2] *= size / 224  # tx, ty: the paper's ±32 px at 224 px
    return affine_theta(params, (size, size)).float()


# --------------------------------------------------------------------------------------------
# One layer, one transformation
# --------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """The tensors of a batch of images and their transforms at one layer."""

    x: Tensor  # φ(x)
    gx: Tensor  # φ(gx)
    forward: Tensor  # warp of φ(x) by g
    flow: Tensor  # the latent backward flow of that warp (its motion descriptors condition)
    valid: Tensor  # where φ(gx) is predictable from φ(x)
    inverse: Tensor  # warp of φ(gx) by g⁻¹
    inverse_valid: Tensor


@torch.no_grad()
def make_pair(front: nn.Module, image: Tensor, theta: Tensor, stride: int) -> Pair:
    """φ(x), φ(gx) and both warps for normalized images (B, 3, H, W) and maps ``theta``."""
    H, W = image.shape[-2:]
    theta = theta.to(image.device)
    moved, covered = warp(image, affine_flow(theta, (H, W)), check=False)
    fx, fgx = front(image), front(moved)
    h, w = fx.shape[-2:]
    flow = affine_flow(latent_affine(theta, stride), (h, w))
    forward, mask = warp(fx, flow, check=False)
    back_theta = invert_theta(theta.double()).float()
    inverse, inv_mask = warp(fgx, affine_flow(latent_affine(back_theta, stride), (h, w)))
    valid = valid_positions(mask, covered, stride, 0)
    return Pair(fx, fgx, forward, flow, valid, inverse, inv_mask)


class _Score:
    """A task metric, or the top-1 agreement with the untransformed network (no labels)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.metric = net.task.metric(net.num_classes) if net.task is not None else None
        self.same = self.count = 0
        self.updated = False

    def update(self, back: nn.Module, features: Tensor, batch: dict, reference: Tensor) -> None:
        self.updated = True
        with torch.no_grad():
            if self.metric is not None:
                task = self.net.task
                output = task.loss_pass(back, features, batch)
                self.metric.update(task.prediction(back, features, output), batch)
            else:
                top = back(features).argmax(1)
                self.same += int((top == back(reference).argmax(1)).sum())
                self.count += top.numel()

    def value(self) -> float:
        if self.metric is not None:
            return float(self.metric.compute()) if self.updated else math.nan
        return self.same / self.count if self.count else math.nan


def _load(bank: FilterBank, fit: LinearFit) -> bool:
    """Set ``bank`` from ``fit``; False (the bank left as it was) when no position was valid
    (a zoom's inverse on a 2×2 tensor, say)."""
    if fit.count == 0:
        return False
    bank.load_fit(*fit.solve())
    return True


def _train_inverse(
    bank: FilterBank, back: nn.Module, net: Network, data: list[tuple[Tensor, dict]], cfg: Any
) -> float:
    """Train the inverse map with the task loss (Adam, ``cfg.task_steps`` steps cycling over
    the training batches); returns the last loss."""
    params = [p for p in bank.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    loss = torch.zeros(())
    for step in range(cfg.task_steps):
        inverse, batch = data[step % len(data)]
        output = net.task.loss_pass(back, bank(inverse), batch)
        loss = net.task.loss(output, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def measure_layer(
    net: Network,
    layer: str,
    name: str,
    train: list[dict[str, Any]],
    test: list[dict[str, Any]],
    cfg: EquivarianceConfig,
) -> dict[str, Any]:
    """The results of transformation ``name`` at split point ``layer``."""
    from featcodec.models.backbones import Normalize

    front, back, stride = net.split(layer)
    normalize = Normalize().to(cfg.device)
    size = cfg.size
    if size % stride:
        raise InputError(
            f"layer {layer!r} has stride {stride}, which does not divide the image size "
            f"{size} (choose an --image-size that {stride} divides)"
        )

    def pairs(batches: list[dict[str, Any]], seed: int) -> Iterator[tuple[Pair, dict]]:
        for i, batch in enumerate(batches):
            batch = {k: v.to(cfg.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            image = normalize(batch["image"])
            theta = thetas(name, size, image.shape[0], seed + i)
            yield make_pair(front, image, theta, stride), batch

    # a random affine differs from draw to draw: its banks see each draw's motion descriptors
    conditioned = name == "affine" and cfg.condition_affine
    descriptors = len(DESCRIPTORS) if conditioned else 0

    def motion(pair: Pair) -> Tensor | None:
        return motion_descriptors(pair.flow) if conditioned else None

    channels = None
    banks: dict[int, FilterBank] = {}
    fits: dict[int, LinearFit] = {}
    inverse_bank: FilterBank | None = None
    inverse_fit: LinearFit | None = None
    task_data: list[tuple[Tensor, dict]] = []
    for pair, batch in pairs(train, 1000 * cfg.seed + 1):
        if channels is None:
            channels = pair.x.shape[1]
            for k in cfg.kernels:
                banks[k] = FilterBank(channels, descriptors, k).to(cfg.device)
                fits[k] = LinearFit(banks[k].design_features, channels, cfg.ridge)
            inverse_bank = FilterBank(channels).to(cfg.device)
            inverse_fit = LinearFit(channels, channels, cfg.ridge)
        d = motion(pair)  # once per batch, shared by every bank
        for k, bank in banks.items():
            fits[k].update(bank.design(pair.forward, d), pair.gx, pair.valid)
        inverse_fit.update(pair.inverse, pair.x, pair.inverse_valid)  # type: ignore[union-attr]
        if net.task is not None and cfg.task_steps:
            task_data.append((pair.inverse, batch))
    assert inverse_bank is not None and inverse_fit is not None and channels is not None
    fitted = {f"map{k}": _load(bank, fits[k]) for k, bank in banks.items()}
    fitted["inverse"] = _load(inverse_bank, inverse_fit)

    def map_score(held_out: list[tuple[Tensor, dict, Tensor]], score: _Score) -> float:
        """The task metric of ``back(M_g⁻¹ φ(gx))`` on the held-out images."""
        if fitted["inverse"]:
            for inverse, batch, x in held_out:
                with torch.no_grad():
                    score.update(back, inverse_bank(inverse), batch, x)
        return score.value()

    train_map = bool(task_data) and fitted["inverse"]  # then scored again after training
    errors: dict[str, list[float]] = {"none": [], "warp": [], **{f"map{k}": [] for k in banks}}
    scores = {s: _Score(net) for s in ("original", "transformed", "warp", "before_training")}
    held_out: list[tuple[Tensor, dict, Tensor]] = []
    for pair, batch in pairs(test, 1000 * cfg.seed + 2):
        with torch.no_grad():
            rng = pair.gx.amax((1, 2, 3)) - pair.gx.amin((1, 2, 3))
            guesses = {"none": pair.x, "warp": pair.forward}
            d = motion(pair)
            guesses |= {
                f"map{k}": b(pair.forward, d) if fitted[f"map{k}"] else pair.forward * math.nan
                for k, b in banks.items()
            }
            for key, guess in guesses.items():
                errors[key] += nrmse(guess, pair.gx, pair.valid, rng).tolist()
            scores["original"].update(back, pair.x, batch, pair.x)
            scores["transformed"].update(back, pair.gx, batch, pair.x)
            scores["warp"].update(back, pair.inverse, batch, pair.x)
        map_score([(pair.inverse, batch, pair.x)], scores["before_training"])
        if train_map:
            held_out.append((pair.inverse, batch, pair.x))
    result: dict[str, Any] = {
        "stride": stride,
        "channels": channels,
        "nrmse": {key: mean_finite(v) for key, v in errors.items()},
        "task": {key: score.value() for key, score in scores.items()},
        "positions_fitted": fits[cfg.kernels[0]].count,
        "conditioned": list(DESCRIPTORS) if conditioned else [],
        "ridge": {**{f"map{k}": f.chosen for k, f in fits.items()}, "inverse": inverse_fit.chosen},
    }
    if train_map:
        inverse_bank.train()
        result["task"]["final_loss"] = _train_inverse(inverse_bank, back, net, task_data, cfg)
        inverse_bank.eval()
        result["task"]["after_training"] = map_score(held_out, _Score(net))
    return result


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_equivariance(cfg: EquivarianceConfig, on_step: Callable[[str], None] | None = None):
    """Run the experiment; returns the JSON-ready report. Every input is checked (checkpoint,
    photo, layers, strides) before the long part."""
    cfg.check()
    start = time.perf_counter()
    net = load_network(cfg)
    layers, skipped = [], []
    for layer in cfg.layers or STAGES:  # unknown split points and strides fail now
        _, _, stride = net.split(layer)
        if cfg.size % stride == 0:
            layers.append(layer)
        elif cfg.layers is None:  # a default layer the size does not suit: left out, said
            skipped.append(f"{layer} (stride {stride} does not divide {cfg.size} px)")
            log.info("leaving out %s", skipped[-1])
        else:
            raise InputError(
                f"layer {layer!r} has stride {stride}, which does not divide the image size "
                f"{cfg.size} (choose an --image-size that {stride} divides)"
            )
    if not layers:
        raise InputError(f"no layer's stride divides the image size {cfg.size}")
    train, test = image_batches(cfg, "train"), image_batches(cfg, "test")
    results: dict[str, dict[str, Any]] = {}
    for layer in layers:
        results[layer] = {}
        for name in cfg.transformations:
            t0 = time.perf_counter()
            results[layer][name] = measure_layer(net, layer, name, train, test, cfg)
            results[layer][name]["seconds"] = round(time.perf_counter() - t0, 2)
            n = results[layer][name]["nrmse"]
            log.info(
                "%s %s: NRMSE none %.4f, warp %.4f, %s (%.1f s)",
                layer,
                name,
                n["none"],
                n["warp"],
                ", ".join(f"{k} {v:.4f}" for k, v in n.items() if k.startswith("map")),
                results[layer][name]["seconds"],
            )
            if on_step is not None:
                on_step(f"{layer} {name}")
    return {
        "experiment": "equivariance",
        "paper": PAPER,
        "network": net.description,
        "metric": net.task.metric_name if net.task is not None else "top-1 agreement",
        "settings": {
            **asdict(cfg),
            "image_size": cfg.size,
            "layers": layers,
            "layers_left_out": skipped,
            "transformations": {
                t: TRANSFORMATIONS.get(t, "random affine") for t in cfg.transformations
            },
            "affine_ranges": {
                **{k: list(v) for k, v in RANGES.items()},
                "translation_scale": cfg.size / 224,
            },
        },
        "results": results,
        "summary": summarize(results, cfg.kernels),
        "timing_s": round(time.perf_counter() - start, 1),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
