"""3-D keypoints of the main object: the HEMlets network (:mod:`.hemlets`) as a task, with its
ground truth, its three losses and MPJPE.

The task predicts the 3-D joints of the scene's *main object* (the largest box, as the 2-D
keypoints task, :func:`~models.tasks.keypoints.main_object`): its ``J`` keypoints in the
image, with depths relative to its root joint. Ground truth comes from the batch's
``keypoints`` (image positions), ``joints3d`` (camera coordinates), ``parts`` (the skeleton)
and ``part_order`` (each part's relative depth order), and ``intrinsics``. On the synthetic
cards the non-root joints are relabelled by their direction about the root in the image
(:func:`canonical_order`; option ``canonical_order``): their labels in the data follow the
card's rotation, which symmetric cards do not show.

Losses (options in :class:`Pose3DLoss`, the architecture's ``task_options``)::

    L = α·(L_HEM·[triplet_loss] + L_2D·[heatmap_loss]) + L_3D,λ
    L_3D,λ = mean over valid joints of (|Δx|·Z_r/f_x + |Δy|·Z_r/f_y + λ|Δz|) / unit

the image-plane error turned into depth units at the root's depth ``Z_r``, so every term of
``L_3D`` is a 3-D distance. The metric is MPJPE (protocol #1): the predicted joints are
back-projected, ``Z_n = Z_r + ẑ_n``, ``X_n = (x̂_n − c_x)·Z_n/f_x``, both skeletons are moved to
their root, and the Euclidean errors of the joints inside the image are averaged (the root,
zero by construction, included), in the data's depth units (millimetres for Human3.6M, scene
units for the synthetic scenes). :class:`MPJPE` also counts PCK-3D (joints within
``pck_threshold``) and the accuracy of the predicted relative depth order of the parts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from featcodec.models.tasks.base import Task, register_task
from featcodec.models.tasks.hemlets import (
    HEMletsNet,
    PoseMaps,
    gaussian_heatmaps,
    heatmap_loss,
    hemlets_loss,
    relative_order,
    triplet_heatmaps,
)
from featcodec.models.tasks.keypoints import inside_image, main_object
from featcodec.models.tasks.trunk import resnet

DEPTH_ORDER_EPS = 0.05
"""ε of the relative depth order in the synthetic scenes' depth units (their cards are
0.4–1.4 units in circumradius at depths 2–6); 50 for millimetres is a like choice."""

NETWORK_OPTIONS = {"num_joints": 256, "num_parts": 256, "inter_channels": 4096, "features": 4096}
"""The options of the network (:class:`~models.tasks.hemlets.HEMletsNet`) and the largest
value each may take (an absurd architecture in a checkpoint is refused, not allocated); the
other options are the loss's (:class:`Pose3DLoss`)."""


def network_option(options: Mapping[str, Any], name: str, default: int) -> int:
    """The integer network option ``name`` (``default`` when absent), checked to lie in
    ``1 .. NETWORK_OPTIONS[name]`` (``ValueError`` otherwise)."""
    value = options.get(name, default)
    top = NETWORK_OPTIONS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ValueError(f"pose3d option {name} must be an integer in 1..{top}, got {value!r}")
    return value


@dataclass(frozen=True)
class Pose3DLoss:
    """The loss and metric options of the 3-D pose task (each default here only).

    Attributes:
        alpha: ``α``, the weight of the intermediate losses ``L_HEM + L_2D``.
        depth_weight: ``λ``, the weight of the depth error in ``L_3D``.
        heatmap_loss: supervise the 2-D heatmaps (``L_2D``).
        triplet_loss: supervise the part-centric triplets (``L_HEM``).
        sigma: σ of the target Gaussians, input pixels.
        depth_eps: ``ε`` of the relative depth order (the data's depth units).
        pck_threshold: PCK-3D counts joints within this distance (the data's depth units).
        unit: depth units per loss unit (1000: a loss in metres on millimetre data).
        root: index of the root joint (0 with ``canonical_order``).
        canonical_order: label the non-root joints by their direction about the root in the
            image (:func:`canonical_order`) and take each part's depth order from those joints,
            for skeletons whose joints have no identity the image shows: the synthetic cards'
            outline keypoints are labelled by the card's own rotation, which a circle or a
            square does not show, so their labels are a guess and a regression to them
            learns the root's position for every joint. Off for a human skeleton.
    """

    alpha: float = 1.0
    depth_weight: float = 1.0
    heatmap_loss: bool = True
    triplet_loss: bool = True
    sigma: float = 4.0
    depth_eps: float = DEPTH_ORDER_EPS
    pck_threshold: float = 0.15
    unit: float = 1.0
    root: int = 0
    canonical_order: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Pose3DLoss:
        """The loss options among ``options`` (network options skipped); ``ValueError``
        naming an unknown option or a value of the wrong kind."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known) - set(NETWORK_OPTIONS))
        if unknown:
            names = ", ".join(sorted([*known, *NETWORK_OPTIONS]))
            raise ValueError(f"unknown pose3d option(s) {', '.join(unknown)}; known: {names}")
        values: dict[str, Any] = {}
        for name, value in options.items():
            if name not in known:
                continue
            kind = type(known[name].default)
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"pose3d option {name} must be true or false, got {value!r}")
            if kind is not bool and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"pose3d option {name} must be a number, got {value!r}")
            values[name] = kind(value)
        loss = cls(**values)
        for name in ("alpha", "depth_weight", "depth_eps"):
            if not getattr(loss, name) >= 0:
                raise ValueError(f"pose3d option {name} must be >= 0, got {getattr(loss, name)}")
        for name in ("sigma", "pck_threshold", "unit"):
            if not getattr(loss, name) > 0:
                raise ValueError(f"pose3d option {name} must be > 0, got {getattr(loss, name)}")
        if loss.root < 0 or (loss.canonical_order and loss.root != 0):
            raise ValueError(
                f"pose3d option root must be >= 0 (0 with canonical_order), got {loss.root}"
            )
        return loss


@dataclass
class PoseTargets:
    """The main object's 3-D pose ground truth of a batch (``B`` images, ``J`` joints, ``K``
    parts); images without an object have nothing valid.

    Attributes:
        xy: ``(B, J, 2)`` image positions, pixels.
        valid: ``(B, J)`` joints inside the image (with finite 3-D coordinates).
        joints: ``(B, J, 3)`` camera coordinates relative to the root joint.
        root_z: ``(B,)`` the root joint's depth ``Z_r``.
        parts: ``(B, K, 2)`` ``(parent, child)`` joint indexes.
        order: ``(B, K)`` relative depth order of each part.
        part_valid: ``(B, K)`` both joints of the part valid (``Λ``).
        intrinsics: ``(B, 4)`` ``(f_x, f_y, c_x, c_y)``.
    """

    xy: Tensor
    valid: Tensor
    joints: Tensor
    root_z: Tensor
    parts: Tensor
    order: Tensor
    part_valid: Tensor
    intrinsics: Tensor

    def to(self, device: torch.device) -> PoseTargets:
        return PoseTargets(*(getattr(self, f.name).to(device) for f in fields(self)))


def canonical_order(xy: Tensor) -> Tensor:
    """The permutation ``(J,)`` that keeps joint 0 (the root) first and lists the others by
    their direction about it in the image ``xy`` ``(J, 2)``: first the one whose direction is
    nearest the image's +x axis, then by increasing angle (clockwise on the screen, whose y
    axis points down)."""
    d = xy[1:] - xy[:1]
    angle = torch.atan2(d[:, 1], d[:, 0])  # (-π, π]
    start = int(angle.abs().argmin())
    turn = torch.remainder(angle - angle[start], 2 * math.pi)
    return torch.cat([torch.zeros(1, dtype=torch.int64), 1 + torch.argsort(turn, stable=True)])


def main_object_pose(
    batch: Mapping[str, Any],
    num_joints: int,
    num_parts: int,
    root: int,
    canonical: tuple[float] | None = None,
) -> PoseTargets:
    """:class:`PoseTargets` of each image's main object; ``ValueError`` when an object's
    annotation does not have ``num_joints`` joints and ``num_parts`` parts. ``canonical``:
    ``(ε,)`` to relabel the joints by :func:`canonical_order` and take each part's depth order
    (threshold ε) from the relabelled joints' depths; ``None`` keeps the data's labels and
    orders."""
    h, w = batch["image"].shape[-2:]
    rows: list[tuple[Tensor, ...]] = []
    for i, boxes in enumerate(batch["boxes"]):
        index = main_object(boxes)
        xy = torch.zeros(num_joints, 2)
        joints = torch.zeros(num_joints, 3)
        parts = torch.zeros(num_parts, 2, dtype=torch.int64)
        order = torch.zeros(num_parts, dtype=torch.int64)
        valid = torch.zeros(num_joints, dtype=torch.bool)
        if index is not None:
            xy = torch.as_tensor(batch["keypoints"][i][index], dtype=torch.float32)[:, :2]
            joints = torch.as_tensor(batch["joints3d"][i][index], dtype=torch.float32)
            parts = torch.as_tensor(batch["parts"][i][index], dtype=torch.int64)
            order = torch.as_tensor(batch["part_order"][i][index], dtype=torch.int64)
            if xy.shape != (num_joints, 2) or joints.shape != (num_joints, 3):
                raise ValueError(
                    f"the pose3d task has {num_joints} joints; an object of the batch has "
                    f"keypoints {tuple(xy.shape)} and joints3d {tuple(joints.shape)}"
                )
            if parts.shape != (num_parts, 2) or order.shape != (num_parts,):
                raise ValueError(
                    f"the pose3d task has {num_parts} parts; an object of the batch has parts "
                    f"{tuple(parts.shape)} and part_order {tuple(order.shape)}"
                )
            if canonical is not None and bool(torch.isfinite(xy).all()):
                perm = canonical_order(xy)
                xy, joints = xy[perm], joints[perm]
                z = joints[:, 2]
                order = relative_order(z[parts[:, 0]], z[parts[:, 1]], canonical[0])
            valid = inside_image(xy, (h, w)) & torch.isfinite(joints).all(-1)
            valid &= bool(torch.isfinite(joints[root]).all())
        rows.append((torch.nan_to_num(xy), valid, torch.nan_to_num(joints), parts, order))
    xy, valid, joints, parts, order = (torch.stack(column) for column in zip(*rows, strict=True))
    root_z = joints[:, root, 2]
    relative = joints - joints[:, root : root + 1]
    part_valid = torch.gather(valid, 1, parts.flatten(1)).unflatten(1, (num_parts, 2)).all(-1)
    intrinsics = torch.as_tensor(batch["intrinsics"], dtype=torch.float32).reshape(-1, 4)
    return PoseTargets(xy, valid, relative, root_z, parts, order, part_valid, intrinsics)


def back_project(joints: Tensor, root_z: Tensor, intrinsics: Tensor, root: int) -> Tensor:
    """Root-relative camera coordinates ``(B, J, 3)`` of predicted joints ``(B, J, 3)``
    (``x, y`` pixels, ``z`` relative to the root) given the root's true depth ``(B,)``."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    z = root_z[:, None] + joints[..., 2]
    xyz = torch.stack(
        [
            (joints[..., 0] - cx[:, None]) * z / fx[:, None],
            (joints[..., 1] - cy[:, None]) * z / fy[:, None],
            z,
        ],
        dim=-1,
    )
    return xyz - xyz[:, root : root + 1]


class MPJPE(Metric):
    """Mean per-joint position error (root-aligned, protocol #1) of the 3-D pose maps
    ``(B, 3J + 3K, H, W)``, with PCK-3D and the relative depth order accuracy of the parts
    (:meth:`compute_all`); :meth:`compute` is MPJPE, in the data's depth units."""

    name = "mpjpe"
    higher_is_better = False
    full_state_update = False

    def __init__(self, task: Pose3D, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.add_state(
            "error", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        for name in ("joints", "within", "order_correct", "parts"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, output: Tensor, batch: Mapping[str, Any]) -> None:
        cfg = self.task.config
        target = self.task.targets_of(batch)
        pred = self.task.joints(output.detach().float()).cpu()
        xyz = back_project(pred, target.root_z, target.intrinsics, cfg.root)
        err = (xyz - target.joints).norm(dim=-1)[target.valid]
        self.error += float(err.double().sum())
        self.joints += int(err.numel())
        self.within += int((err <= cfg.pck_threshold).sum())
        parent, child = target.parts.unbind(-1)
        z = pred[..., 2]
        order = relative_order(z.gather(1, parent), z.gather(1, child), cfg.depth_eps)
        self.order_correct += int(((order == target.order) & target.part_valid).sum())
        self.parts += int(target.part_valid.sum())

    def compute(self) -> Tensor:
        if not self.joints:
            return torch.tensor(float("nan"))
        return self.error / self.joints

    def compute_all(self) -> dict[str, float]:
        """``{"mpjpe", "pck3d", "depth_order"}`` (NaN for what saw nothing)."""
        nan = float("nan")
        return {
            "mpjpe": float(self.compute()),
            "pck3d": float(self.within) / int(self.joints) if self.joints else nan,
            "depth_order": float(self.order_correct) / int(self.parts) if self.parts else nan,
        }


@register_task
class Pose3D(Task):
    """:class:`~models.tasks.hemlets.HEMletsNet`: the pose maps ``(B, 3J + 3K, H, W)`` of the
    main object (joints by :meth:`joints`); loss ``α(L_HEM + L_2D) + L_3D,λ``, distillation L1
    on the joints plus the intermediate maps' loss to the teacher's, metric MPJPE (lower is
    better). Network options: ``num_joints`` (5), ``num_parts`` (4), ``inter_channels``,
    ``features``; loss options: :class:`Pose3DLoss`."""

    name = "pose3d"
    metric_name = "mpjpe"
    higher_is_better = False
    targets = ("boxes", "keypoints", "joints3d", "parts", "part_order", "intrinsics")
    dense = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.config = Pose3DLoss.from_options(options)
        joints, parts = (
            network_option(options, "num_joints", 5),
            network_option(options, "num_parts", 4),
        )
        if joints < 2:
            raise ValueError("pose3d option num_joints must be at least 2 (a root and a joint)")
        self.layout = PoseMaps(joints, parts)

    def configure(self, options: Mapping[str, Any]) -> Pose3D:
        return Pose3D(options)

    def build(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        num_joints: int = 5,
        num_parts: int = 4,
        inter_channels: int = 128,
        features: int = 64,
        **loss: Any,
    ) -> HEMletsNet:
        del num_classes  # the joints of the main object, whatever its class
        options = dict(
            num_joints=num_joints,
            num_parts=num_parts,
            inter_channels=inter_channels,
            features=features,
        )
        Pose3D({**options, **loss})  # a misspelt or absurd option fails here, before allocating
        for name in ("inter_channels", "features"):
            network_option(options, name, 0)
        return HEMletsNet(
            resnet(backbone, weights), num_joints, num_parts, inter_channels, features
        )

    # the pieces -------------------------------------------------------------------------------

    def joints(self, output: Tensor) -> Tensor:
        """``(B, J, 3)``: ``(x, y)`` in input pixels and depth relative to the root."""
        joints = self.layout.joints(output)
        return torch.cat([joints[..., :2], joints[..., 2:] * self.config.unit], dim=-1)

    def targets_of(self, batch: Mapping[str, Any]) -> PoseTargets:
        layout, cfg = self.layout, self.config
        canonical = (cfg.depth_eps,) if cfg.canonical_order else None
        return main_object_pose(batch, layout.num_joints, layout.num_parts, cfg.root, canonical)

    def intermediate_loss(
        self, output: Tensor, heatmaps: Tensor, triplets: Tensor, valid: Tensor, part_valid: Tensor
    ) -> Tensor:
        """``α(L_HEM + L_2D)`` (the terms switched on) against target maps."""
        cfg = self.config
        h, t, _, _ = self.layout.split(output)
        loss = output.new_zeros(())
        if cfg.heatmap_loss:
            loss = loss + heatmap_loss(h, heatmaps, valid, cfg.sigma)
        if cfg.triplet_loss:
            loss = loss + hemlets_loss(t, triplets, part_valid, cfg.sigma)
        return cfg.alpha * loss

    # losses -----------------------------------------------------------------------------------

    def loss(self, output: Tensor, batch: Mapping[str, Any]) -> Tensor:
        cfg = self.config
        target = self.targets_of(batch).to(output.device)
        size = (output.shape[-2], output.shape[-1])
        heatmaps = gaussian_heatmaps(target.xy, size, cfg.sigma)
        triplets = triplet_heatmaps(target.xy, target.parts, target.order, size, cfg.sigma)
        loss = self.intermediate_loss(output, heatmaps, triplets, target.valid, target.part_valid)
        if not bool(target.valid.any()):
            return loss + output.sum() * 0.0
        pred = self.joints(output)
        scale = target.root_z[:, None, None] / target.intrinsics[:, None, :2]  # (B, 1, 2)
        planar = ((pred[..., :2] - target.xy).abs() * scale).sum(-1)
        depth = (pred[..., 2] - target.joints[..., 2]).abs()
        l3d = (planar + cfg.depth_weight * depth)[target.valid].mean() / cfg.unit
        return loss + l3d

    def distill(self, output: Tensor, teacher: Tensor) -> Tensor:
        """L1 between the joints (``x, y`` in units of half the shorter image side, ``λ·z`` in
        loss units) plus the intermediate losses with the teacher's maps as targets."""
        cfg = self.config
        pred, ref = self.joints(output), self.joints(teacher)
        half = 0.5 * min(output.shape[-2:])
        planar = (pred[..., :2] - ref[..., :2]).abs().sum(-1) / half
        depth = (pred[..., 2] - ref[..., 2]).abs() / cfg.unit
        h_ref, t_ref, _, _ = self.layout.split(teacher)
        every = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
        parts = torch.ones(
            t_ref.shape[0], self.layout.num_parts, dtype=torch.bool, device=pred.device
        )
        loss = self.intermediate_loss(output, h_ref, t_ref, every, parts)
        return loss + (planar + cfg.depth_weight * depth).mean()

    # evaluation -------------------------------------------------------------------------------

    def metric(self, num_classes: int) -> MPJPE:
        return MPJPE(self)

    def summary(self, output: Tensor) -> dict[str, Any]:
        """``joints3d``: per joint ``[x, y, z]``, ``x, y`` in input pixels, ``z`` the depth
        relative to the root joint (the data's units); with the camera and the root's depth,
        ``X = (x − c_x)·(Z_r + z)/f_x``."""
        joints = self.joints(output[:1].detach().float())[0]
        return {"joints3d": [[round(float(v), 4) for v in joint] for joint in joints]}

    def output_channels(self, num_classes: int) -> int:
        return self.layout.channels
