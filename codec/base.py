"""Base layer: a mean–scale hyperprior codec for a feature tensor.

de Andrade & Bajić, "Towards Task-Compatible Compressible Representations" (ICME 2024
workshop) code the base layer with ELIC's analysis/synthesis transforms and the Gaussian
hyperprior of Ballé et al. (ICLR 2018), with straight-through rounding for the synthesis::

    F (B,C,h,w) ─pad─▶ g_a ─▶ Y (B,M,h/2ᵏ,w/2ᵏ) ──────────────┐
                              └─▶ h_a ─▶ Z ─▶ [factorized] ─▶ Ẑ ─▶ h_s ─▶ (μ, σ)
                                                                        │
                         Ŷ = round(Y − μ) + μ ◀─ [Gaussian(μ, σ)] ◀─────┘
    F̂ (B,C,h,w) ◀─crop── g_s ◀── Ŷ ──▶ g_r ─▶ X̂ (B,3,H,W)   (optional preview, β reward)

The hyperprior is featcodec's one :class:`~codec.hyperprior.ConditionalHyperprior`, here
without a context. The transforms are ELIC's (He et al., CVPR 2022), from compressai's
layers: residual bottleneck blocks and the simplified attention block of Cheng et al. (CVPR
2020). Any ``h×w`` is accepted: the tensor is zero-padded to a multiple of
``2^(k + k_hyper)`` and the output cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressai.layers import AttentionBlock
from compressai.models.sensetime import ResidualBottleneckBlock
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from featcodec.codec.coding_mode import EXACT, CodingMode
from featcodec.codec.entropy import FactorizedCoder, GaussianCoder
from featcodec.codec.hyperprior import ConditionalHyperprior, hyper_transforms
from featcodec.codec.preview import PreviewSynthesis
from featcodec.codec.registry import register_codec


@dataclass
class BaseOutput:
    """Training-time output of :class:`HyperpriorCodec`.

    Attributes:
        features_hat: reconstruction ``F̂`` ``(B, C, h, w)``.
        likelihoods: ``{"y": (B, M, ·, ·), "z": (B, N, ·, ·)}`` (estimates, for the rate term).
        y_hat: quantized latent ``Ŷ``.
        preview: ``g_r(Ŷ)`` ``(B, 3, H, W)``, the input as the base alone can show it (when
            the codec has a preview synthesis; see :mod:`codec.preview`).
    """

    features_hat: Tensor
    likelihoods: dict[str, Tensor]
    y_hat: Tensor
    preview: Tensor | None = None


@dataclass
class BaseCode:
    """What :meth:`HyperpriorCodec.compress` produces for a batch.

    Attributes:
        y: one rANS string of ``Ŷ`` per batch element.
        z: one rANS string of ``Ẑ`` per batch element.
        y_hat: the encoder's ``Ŷ``, which the decoder reproduces exactly.
    """

    y: list[bytes]
    z: list[bytes]
    y_hat: Tensor


@register_codec("hyperprior")
class HyperpriorCodec(ConditionalHyperprior):
    """Mean–scale hyperprior base layer with ELIC transforms.

    Args:
        in_channels: channels ``C`` of the feature tensor (output has the same).
        N: width of the transforms and channels of the hyper-latent ``Z``.
        M: channels of the latent ``Y``.
        downsample: stride-2 stages in ``g_a`` (0 keeps the feature resolution).
        hyper_downsample: stride-2 stages in ``h_a``.
        blocks: residual bottleneck blocks per resolution.
        attention: add ELIC's attention block at the latent end of ``g_a`` and ``g_s`` (one
            block, shared by both, as every trained checkpoint has it).
        preview: add the reconstruction-reward synthesis ``g_r`` (:mod:`codec.preview`).
        input_stride: stride of the feature tensor in input pixels (the split's; set by the
            facade, not stored in the architecture), for ``g_r``.

    The defaults are those of :class:`~codec.config.HyperpriorConfig`.
    """

    def __init__(
        self,
        in_channels: int,
        N: int = 128,
        M: int = 128,
        downsample: int = 1,
        hyper_downsample: int = 2,
        blocks: int = 1,
        attention: bool = True,
        preview: bool = False,
        input_stride: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or N < 1 or M < 1 or downsample < 0 or hyper_downsample < 0:
            raise ValueError("HyperpriorCodec: channels must be ≥ 1 and stage counts ≥ 0")
        self.in_channels = in_channels
        self.downsample = downsample
        self.hyper_downsample = hyper_downsample

        def res(n: int) -> list[nn.Module]:
            return [ResidualBottleneckBlock(n, n) for _ in range(blocks)]

        attn = [AttentionBlock(N)] if attention else []
        g_a: list[nn.Module] = [conv(in_channels, N, 3, 1), *res(N)]
        g_s: list[nn.Module] = [conv(M, N, 3, 1), *attn, *res(N)]
        for _ in range(downsample):
            g_a += [conv(N, N), *res(N)]
            g_s += [deconv(N, N), *res(N)]
        g_a += [*attn, conv(N, M, 3, 1)]
        g_s += [conv(N, in_channels, 3, 1)]
        self.g_a = nn.Sequential(*g_a)
        self.g_s = nn.Sequential(*g_s)

        h_a, h_s = hyper_transforms(M, N, hyper_downsample)
        self.h_a = nn.Sequential(*h_a)
        self.h_s = nn.Sequential(*h_s, conv(N, 2 * M, 3, 1))  # (σ, μ) directly: no params

        self.entropy_z = FactorizedCoder(N)
        self.entropy_y = GaussianCoder()
        self.input_stride = input_stride
        self.g_r = PreviewSynthesis(M, input_stride * 2**downsample) if preview else None
        self.detach_preview = False  # True: g_r learns from Ŷ without shaping it (β = 0)

    def preview(self, y_hat: Tensor, size: tuple[int, int]) -> Tensor | None:
        """``g_r(Ŷ)`` cropped to the input ``size`` ``(H, W)``, if the codec has ``g_r``."""
        return None if self.g_r is None else self.g_r(y_hat, size)

    def forward(self, f: Tensor) -> BaseOutput:
        """Training/validation pass on features ``f`` ``(B, C, h, w)``."""
        h, w = f.shape[-2:]
        latent = self.latent_forward(self.g_a(self.pad(f)))
        y_hat = latent.y_hat
        f_hat = self.g_s(y_hat)[..., :h, :w]
        size = (h * self.input_stride, w * self.input_stride)
        preview = self.preview(y_hat.detach() if self.detach_preview else y_hat, size)
        return BaseOutput(f_hat, latent.likelihoods, y_hat, preview)

    @torch.no_grad()
    def compress(self, f: Tensor, mode: CodingMode = EXACT) -> BaseCode:
        """Entropy-code features ``f`` ``(B, C, h, w)``."""
        y_strings, z_strings, y_hat = self.latent_compress(self.g_a(self.pad(f)), mode=mode)
        return BaseCode(y_strings, z_strings, y_hat)

    @torch.no_grad()
    def decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        size: tuple[int, int],
        mode: CodingMode = EXACT,
    ) -> tuple[Tensor, Tensor]:
        """Decode ``(F̂, Ŷ)`` for features of spatial ``size`` ``(h, w)``."""
        y_hat = self.latent_decompress(y_strings, z_strings, self.hyper_size(*size), mode=mode)
        f_hat = self.g_s(y_hat)[..., : size[0], : size[1]]
        return f_hat, y_hat
