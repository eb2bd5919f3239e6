"""Enhancement layer: what a second consumer needs, coded conditionally on the decoded base.

de Andrade & Bajić, "Towards Task-Compatible Compressible Representations" (ICME 2024
workshop): the base layer ``Ŷ_b`` serves the machine task; the enhancement layer codes the
input (or a second task's target) with an entropy model conditioned on ``Ŷ_b``, so it pays
only for what the base does not already carry: rate ``h(Ŷ_e | Ŷ_b)``, loss
``λ_e·d_e(X̂, X) + h(Ŷ_e | Ŷ_b)``. The base is frozen while the enhancement trains::

    x (B,3,H,W) ─pad─▶ g_aᵉ ─▶ Y_e (B,M,H/s,W/s) ─▶ h_aᵉ ─▶ Z_e ─▶ [factorized] ─▶ Ẑ_e ─▶ h_sᵉ ─┐
    Ŷ_b (decoded base latent) ─▶ c_p, resampled to Y_e's grid ─────────────────────────────┤
                                         (μ_e, σ_e) = p([h_sᵉ(Ẑ_e), c_p(Ŷ_b)]) ◀────────────┘
    Ŷ_e = round(Y_e − μ_e) + μ_e   (coded with Gaussian(μ_e, σ_e))
    X̂ (B,out,H,W) ◀─crop─ g_sᵉ([Ŷ_e, c_s(Ŷ_b)])

``c_p`` and ``c_s`` are small convolutions that bring the base latent (stride ``s_b`` in input
pixels) to the enhancement latent's grid (stride ``s = 2^downsample``). The *standalone*
variant is the same layer with ``Ŷ_b`` replaced by zeros: no side information, the lower bound
the conditional layer is measured against. The entropy model is featcodec's one
:class:`~codec.hyperprior.ConditionalHyperprior`, its context ``c_p(Ŷ_b)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.models.sensetime import ResidualBottleneckBlock
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from featcodec.codec.coding_mode import EXACT, CodingMode
from featcodec.codec.entropy import FactorizedCoder, GaussianCoder
from featcodec.codec.hyperprior import ConditionalHyperprior, hyper_transforms
from featcodec.codec.registry import register_codec


@dataclass
class EnhancementOutput:
    """Training-time output: the target's reconstruction ``(B, out, H, W)``, the latents'
    likelihoods (estimates for the rate term) and the entropy parameters of ``Y_e``."""

    output: Tensor
    likelihoods: dict[str, Tensor]
    scales: Tensor
    means: Tensor


@dataclass
class EnhancementCode:
    """One rANS string per batch element for ``Ŷ_e`` (``y``) and ``Ẑ_e`` (``z``)."""

    y: list[bytes]
    z: list[bytes]


def _resampler(in_channels: int, out_channels: int, ratio: float) -> nn.Sequential:
    """Conv layers mapping a tensor of stride ``s_b`` to stride ``s`` (``ratio = s_b / s``)."""
    if ratio <= 0 or 2 ** round(math.log2(ratio)) != ratio:
        raise ValueError(f"enhancement: base/enhancement stride ratio {ratio} is not 2^k")
    layers: list[nn.Module] = [conv(in_channels, out_channels, 3, 1)]
    for _ in range(abs(round(math.log2(ratio)))):
        layers += [nn.ReLU(inplace=True)]
        layers += [
            deconv(out_channels, out_channels) if ratio > 1 else conv(out_channels, out_channels)
        ]
    return nn.Sequential(*layers)


def _fit(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop or zero-pad ``t`` (B, C, h, w) to spatial ``size``."""
    t = t[..., : size[0], : size[1]]
    return F.pad(t, (0, size[1] - t.shape[-1], 0, size[0] - t.shape[-2]))


@register_codec("enhancement")
class EnhancementCodec(ConditionalHyperprior):
    """Enhancement layer conditioned on the decoded base latent.

    Args:
        base_channels: channels ``M_b`` of the base latent ``Ŷ_b``.
        base_stride: stride of ``Ŷ_b`` in input pixels.
        out_channels: channels of the target (3 for the input image; ``K + 1`` class logits
            for segmentation, 1 for depth: a second task's output).
        target: what the layer outputs: ``"reconstruction"`` (the input image) or the name of
            the second task (recorded for decoders; the loss is the training module's).
        N, M: transform width and channels of ``Y_e``.
        downsample: stride-2 stages of ``g_aᵉ`` (the latent's stride is ``2^downsample``).
        hyper_downsample: stride-2 stages of ``h_aᵉ``.
        standalone: ignore the base (``Ŷ_b`` zeroed): the lower bound.
    """

    def __init__(
        self,
        base_channels: int,
        base_stride: int,
        out_channels: int = 3,
        N: int = 64,
        M: int = 64,
        downsample: int = 4,
        hyper_downsample: int = 2,
        standalone: bool = False,
        target: str = "reconstruction",
    ) -> None:
        super().__init__()
        self.target = target
        self.downsample, self.hyper_downsample = downsample, hyper_downsample
        self.standalone = standalone
        ratio = base_stride / 2**downsample
        g_a: list[nn.Module] = [conv(3, N, 3, 1)]
        g_s: list[nn.Module] = [conv(M + N, N, 3, 1), ResidualBottleneckBlock(N, N)]
        for _ in range(downsample):
            g_a += [conv(N, N), ResidualBottleneckBlock(N, N)]
            g_s += [deconv(N, N), ResidualBottleneckBlock(N, N)]
        g_a += [conv(N, M, 3, 1)]
        g_s += [conv(N, out_channels, 3, 1)]
        self.g_a, self.g_s = nn.Sequential(*g_a), nn.Sequential(*g_s)
        h_a, h_s = hyper_transforms(M, N, hyper_downsample)
        self.h_a, self.h_s = nn.Sequential(*h_a), nn.Sequential(*h_s)
        self.context_params = _resampler(base_channels, N, ratio)
        self.context_synthesis = _resampler(base_channels, N, ratio)
        self.params = nn.Sequential(
            conv(2 * N, 2 * N, 1, 1), nn.ReLU(inplace=True), conv(2 * N, 2 * M, 1, 1)
        )
        self.entropy_z = FactorizedCoder(N)
        self.entropy_y = GaussianCoder()

    def latent_size(self, H: int, W: int) -> tuple[int, int]:
        m, s = self.multiple, 2**self.downsample
        return -(-H // m) * m // s, -(-W // m) * m // s

    def _base(self, y_b: Tensor) -> Tensor:
        return torch.zeros_like(y_b) if self.standalone else y_b

    def _context(
        self, y_b: Tensor, size: tuple[int, int], mode: CodingMode | None = None
    ) -> Tensor:
        """The hyperprior's context: ``c_p(Ŷ_b)`` on the grid of ``Y_e`` (``size``); for coding
        (``mode``), in fixed point when the mode is exact."""
        base = self._base(y_b)
        if mode is None:
            return _fit(self.context_params(base), size)
        return _fit(self.context_of("context_params", base, mode), size)

    def _synthesis(self, y_hat: Tensor, y_b: Tensor, H: int, W: int) -> Tensor:
        context = _fit(self.context_synthesis(self._base(y_b)), tuple(y_hat.shape[-2:]))
        return self.g_s(torch.cat([y_hat, context], 1))[..., :H, :W]

    def _analysis(self, x: Tensor) -> Tensor:
        return self.g_a(self.pad(x))

    def forward(self, x: Tensor, y_b: Tensor) -> EnhancementOutput:
        """Training pass: input ``x`` (B, 3, H, W) and the decoded base latent ``Ŷ_b``."""
        H, W = x.shape[-2:]
        y = self._analysis(x)
        latent = self.latent_forward(y, self._context(y_b, tuple(y.shape[-2:])))
        out = self._synthesis(latent.y_hat, y_b, H, W)
        likelihoods = {"y_e": latent.likelihoods["y"], "z_e": latent.likelihoods["z"]}
        return EnhancementOutput(out, likelihoods, latent.scales, latent.means)

    @torch.no_grad()
    def compress(self, x: Tensor, y_b: Tensor, mode: CodingMode = EXACT) -> EnhancementCode:
        """Entropy-code the enhancement of images ``x`` given the decoded base latent."""
        y = self._analysis(x)
        context = self._context(y_b, tuple(y.shape[-2:]), mode)
        y_strings, z_strings, _ = self.latent_compress(y, context, mode)
        return EnhancementCode(y_strings, z_strings)

    @torch.no_grad()
    def decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        y_b: Tensor,
        size: tuple[int, int],
        mode: CodingMode = EXACT,
    ) -> Tensor:
        """The target ``(B, out, H, W)`` for inputs of ``size`` ``(H, W)``."""
        context = self._context(y_b, self.latent_size(*size), mode)
        y_hat = self.latent_decompress(y_strings, z_strings, self.hyper_size(*size), context, mode)
        return self._synthesis(y_hat, y_b, *size)
