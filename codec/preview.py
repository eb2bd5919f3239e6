"""Reconstruction reward: a deliberately simple synthesis ``g_r`` from the base latent to the
input image (de Andrade & Bajić, "Towards Task-Compatible Compressible Representations").

The base layer is trained for its machine task; a small reward ``β·E‖X̂_b − X‖²`` on how well
``g_r`` can reconstruct the input from the *decoded* base latent ``Ŷ_b`` keeps some of the
input's structure in the representation, at little cost to the task (``β ≪ λ_b``). ``g_r`` is
kept weak on purpose (a few layers), so the reward shapes the representation rather than
``g_r`` itself doing the work. The base decoder can output ``X̂_b`` as a cheap preview::

    Ŷ_b (B, M, H/s, W/s) ─▶ [deconv ×2 ─ ReLU] × (log₂ s − 1) ─▶ deconv ×2 ─▶ X̂_b (B, 3, H, W)

``s`` is the latent's stride in input pixels (split stride × 2^downsample of the base).
The distortion is the mean squared error on the 0–255 scale (CompressAI's convention for
``λ·255²·MSE``), so ``β`` reads like an image codec's λ.
"""

from __future__ import annotations

import math

import torch
from compressai.models.utils import conv, deconv
from torch import Tensor, nn


class PreviewSynthesis(nn.Module):
    """``g_r``: decoded base latent ``(B, M, h, w)`` → image ``(B, 3, s·h, s·w)`` in [0, 1].

    Args:
        M: channels of the base latent.
        stride: the latent's stride ``s`` in input pixels (a power of two, ≥ 1).
        width: channels of the hidden layers.
    """

    def __init__(self, M: int, stride: int, width: int = 64) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"preview: the latent stride must be a power of two, not {stride}")
        stages = int(math.log2(stride))
        layers: list[nn.Module] = []
        channels = M
        for _ in range(stages - 1):
            layers += [deconv(channels, width), nn.ReLU(inplace=True)]
            channels = width
        layers += [deconv(channels, 3) if stages else conv(channels, 3, 3, 1)]
        self.net = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, y_hat: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """The preview, cropped to the input ``size`` ``(H, W)`` when given."""
        x = torch.sigmoid(self.net(y_hat))
        return x if size is None else x[..., : size[0], : size[1]]


def reconstruction_distortion(x_hat: Tensor, x: Tensor) -> Tensor:
    """``E‖X̂ − X‖²`` per pixel on the 0–255 scale, for images in [0, 1]."""
    return 255.0**2 * (x_hat - x).square().mean()
