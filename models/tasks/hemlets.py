"""HEMlets: part-centric heatmap triplets, 2-D heatmaps and integral 3-D regression (Zhou et
al., *HEMlets Pose: Learning Part-Centric Heatmap Triplets for Accurate 3D Human Pose
Estimation*, with the soft-argmax of Sun et al., *Integral Human Pose Regression*).

For each part ``k`` of a skeleton, a parent joint ``p`` and a child ``c``, the relative depth
order ``r(z_p, z_c) ∈ {−1, 0, +1}`` (threshold ε) selects which of the triplet's three maps
``T_k^{−1}, T_k^0, T_k^{+1}`` carries the pair's co-location likelihood: Gaussians at both
joints' image positions on ``T_k^r``, nothing on the other two. The network predicts the
triplets and the joints' 2-D heatmaps ``H_n`` as intermediate maps, and from its features and
both of them the maps that soft-argmax reduces to ``(x, y, z)`` per joint::

    x ─ trunk ─ LRASPPHead(low, high) ─┬─ Ĥ  (J)   2-D heatmaps          ─┐
         (s 8)                         ├─ T̂  (3K) part-centric triplets  ─┤ concat
                                       └─ features (W)                   ─┴─ conv ─┬─ F (J)  logits
                                                                            (+ κ·Ĥ) ┘└─ D (J)  depth
    every map ×8 (bilinear) to the input's size; per joint n, with P_n = softmax(F_n) over the
    cells v of the head's resolution (8 × 8 pixels, F and D averaged over each):
    (x̂_n, ŷ_n) = Σ_v v·P_n(v),    ẑ_n = Σ_v D_n(v)·P_n(v)

The logits carry a skip from the 2-D heatmaps, ``F_n = conv(…) + κ·Ĥ_n`` (κ learnt, from 5):
the 2-D heatmaps feed the integral stage, as the paper feeds them to its volumetric head, so
what ``L_2D`` teaches the heatmaps reaches the regression directly.

The 3-D output is 2.5-D: the volume of the paper's ``∫ v·softmax(F_n)`` factorises into the
image-plane likelihood ``P_n`` and a per-pixel depth ``D_n`` (the depth of joint ``n`` were it
at that pixel), which keeps every map at the input's resolution at ``3J + 3K`` channels, so
an enhancement layer can target it as it targets any dense task. Depths are relative to the
root joint. Losses (:func:`hemlets_loss`, :func:`heatmap_loss`, the 3-D L1 of
:mod:`.pose3d`)::

    L_HEM = ‖(T^gt − T̂) ⊙ Λ‖²     L_2D = Σ_n ‖H_n^gt − Ĥ_n‖²     L = α(L_HEM + L_2D) + L_3D,λ

``Λ`` masks the parts whose joints are not both in the image (and ``L_2D`` the joints that are
not); each map's squared error is divided by its target's energy (``πσ²`` a Gaussian), so a
map of zeros costs 1 whatever σ and the image size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.lraspp import LRASPPHead

from featcodec.models.tasks.keypoints import soft_argmax
from featcodec.models.tasks.trunk import LOW_STRIDE, TrunkNet

ORDERS = (-1, 0, 1)
"""The relative depth orders, in the order of a triplet's maps ``T^{−1}, T^0, T^{+1}``."""


def gaussian_heatmaps(points: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Gaussians ``exp(−‖v − p‖² / 2σ²)`` ``(..., H, W)`` at ``points`` ``(..., 2)`` ``(x, y)``
    in pixels (pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``), peak 1."""
    h, w = size
    xs = torch.arange(w, device=points.device, dtype=points.dtype) + 0.5
    ys = torch.arange(h, device=points.device, dtype=points.dtype) + 0.5
    gx = (xs - points[..., 0:1]).square()  # (..., W)
    gy = (ys - points[..., 1:2]).square()  # (..., H)
    return torch.exp(-(gy[..., :, None] + gx[..., None, :]) / (2 * sigma**2))


def relative_order(z_parent: Tensor, z_child: Tensor, eps: float) -> Tensor:
    """``r(z_p, z_c)``: +1 where ``z_p − z_c > ε``, −1 where ``< −ε``, 0 else (int64)."""
    diff = z_parent - z_child
    return (diff > eps).long() - (diff < -eps).long()


def triplet_heatmaps(
    points: Tensor, parts: Tensor, order: Tensor, size: tuple[int, int], sigma: float
) -> Tensor:
    """The part-centric triplets ``(B, 3K, H, W)``: for part ``k`` (joints ``parts[:, k]``),
    channels ``3k .. 3k+2`` are ``T_k^{−1}, T_k^0, T_k^{+1}``; the map of the part's order holds
    the Gaussians of both its joints (their maximum), the other two are zero.

    Args:
        points: ``(B, J, 2)`` joint positions ``(x, y)``, pixels.
        parts: ``(B, K, 2)`` int64 ``(parent, child)`` joint indexes.
        order: ``(B, K)`` int64 relative depth orders in {−1, 0, 1}.
        size: ``(H, W)`` of the maps.
        sigma: Gaussian σ, pixels.
    """
    b, k = order.shape
    ends = torch.gather(points, 1, parts.reshape(b, 2 * k, 1).expand(b, 2 * k, 2))
    blobs = gaussian_heatmaps(ends, size, sigma).unflatten(1, (k, 2)).amax(2)  # (B, K, H, W)
    which = F.one_hot(order + 1, len(ORDERS)).to(blobs.dtype)  # (B, K, 3)
    return (which[..., None, None] * blobs[:, :, None]).flatten(1, 2)


def heatmap_loss(pred: Tensor, target: Tensor, valid: Tensor, sigma: float) -> Tensor:
    """``L_2D``: the squared error of each valid joint's heatmap ``(B, J, H, W)`` summed over its
    pixels and divided by ``πσ²`` (its target's energy), averaged over valid joints ``(B, J)``;
    0 with a gradient when none is valid."""
    if not bool(valid.any()):
        return pred.sum() * 0.0
    per_map = (pred - target).square().flatten(2).sum(-1) / (math.pi * sigma**2)
    return per_map[valid].mean()


def hemlets_loss(pred: Tensor, target: Tensor, valid: Tensor, sigma: float) -> Tensor:
    """``L_HEM = ‖(T^gt − T̂) ⊙ Λ‖²`` with ``Λ`` = ``valid`` ``(B, K)`` (both joints of the part
    in the image): each valid triplet's squared error ``(B, 3K, H, W)`` summed over its three
    maps and divided by ``2πσ²`` (the energy of its two Gaussians), averaged over valid parts."""
    if not bool(valid.any()):
        return pred.sum() * 0.0
    per_part = (pred - target).square().unflatten(1, (-1, len(ORDERS))).flatten(2).sum(-1)
    return (per_part / (2 * math.pi * sigma**2))[valid].mean()


class PoseMaps:
    """The channel layout of the maps ``(B, 3J + 3K, H, W)`` a 3-D pose network (or an
    enhancement layer that targets it) outputs: ``[Ĥ (J) | T̂ (3K) | F (J) | D (J)]``."""

    cell = LOW_STRIDE
    """Pixels per side of the soft-argmax's cells: the head's own resolution. A softmax over
    every pixel of an upsampled map needs logits that span ``log(H·W)`` before its mass
    gathers at a peak (the regression then starts at the image centre and stays there);
    over the head's cells a peak of a few units suffices, and the expectation still places
    a joint between cell centres."""

    def __init__(self, num_joints: int, num_parts: int) -> None:
        self.num_joints, self.num_parts = num_joints, num_parts

    @property
    def channels(self) -> int:
        return 3 * self.num_joints + 3 * self.num_parts

    def split(self, maps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(Ĥ, T̂, F, D)`` of ``maps``; ``ValueError`` if its channels are not the layout's."""
        if maps.dim() != 4 or maps.shape[1] != self.channels:
            raise ValueError(
                f"3-D pose maps need {self.channels} channels ({self.num_joints} joints, "
                f"{self.num_parts} parts), got a tensor of shape {tuple(maps.shape)}"
            )
        j, t = self.num_joints, 3 * self.num_parts
        return maps[:, :j], maps[:, j : j + t], maps[:, j + t : 2 * j + t], maps[:, 2 * j + t :]

    def joints(self, maps: Tensor) -> Tensor:
        """Integral regression: ``(B, J, 3)`` ``(x, y)`` in pixels of the maps and ``z`` the
        depth under ``softmax(F_n)`` (the module docstring's 2.5-D soft-argmax), over cells of
        :attr:`cell` × :attr:`cell` pixels (``F`` and ``D`` averaged over each cell)."""
        _, _, logits, depth = self.split(maps)
        if self.cell > 1:
            logits = F.avg_pool2d(logits, self.cell, ceil_mode=True)
            depth = F.avg_pool2d(depth, self.cell, ceil_mode=True)
        xy = soft_argmax(logits, self.cell)
        prob = logits.flatten(2).softmax(-1)
        z = (prob * depth.flatten(2)).sum(-1)
        return torch.cat([xy, z[..., None]], dim=-1)


class HEMletsNet(TrunkNet):
    """The HEMlets head on a split ResNet trunk: the maps of :class:`PoseMaps` at the input's
    size (``8⌈H/8⌉ x 8⌈W/8⌉``).

    Args:
        backbone: the ResNet whose trunk is used.
        num_joints, num_parts: ``J`` and ``K`` (the skeleton's joints and parts).
        inter_channels: width of the LRASPP head.
        features: channels the head passes to the 3-D stage beside ``Ĥ`` and ``T̂``.
        skip: the initial κ of the skip from the 2-D heatmaps to the logits.
    """

    def __init__(
        self,
        backbone: ResNet,
        num_joints: int = 5,
        num_parts: int = 4,
        inter_channels: int = 128,
        features: int = 64,
        skip: float = 5.0,
    ) -> None:
        super().__init__(backbone)
        self.layout = PoseMaps(num_joints, num_parts)
        intermediate = num_joints + 3 * num_parts
        self.intermediate = intermediate
        self.head = LRASPPHead(
            self.low_channels, self.high_channels, intermediate + features, inter_channels
        )
        self.integral = nn.Sequential(
            nn.Conv2d(intermediate + features, features, 3, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, 2 * num_joints, 1),
        )
        self.skip = nn.Parameter(torch.tensor(skip))

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> maps ``(B, 3J + 3K, 8⌈H/8⌉, 8⌈W/8⌉)``."""
        low, high = self.taps(x)
        head = self.head({"low": low, "high": high})
        j = self.layout.num_joints
        integral = self.integral(head)
        logits = integral[:, :j] + self.skip * head[:, :j]  # F_n = conv(...) + κ·Ĥ_n
        maps = torch.cat([head[:, : self.intermediate], logits, integral[:, j:]], dim=1)
        return F.interpolate(maps, scale_factor=LOW_STRIDE, mode="bilinear", align_corners=False)
