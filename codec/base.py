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
without a context. With a ``gate`` (:mod:`codec.gate`) only the latent positions the gate
opens are coded: the sparse front's mask sent as side information, or a gate derived from the
decoded hyper-latent. The transforms are ELIC's (He et al., CVPR 2022), from compressai's
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
from featcodec.codec.entropy import FactorizedCoder, GaussianCoder, RansReader, RansWriter
from featcodec.codec.gate import (
    GATES,
    apply_gate,
    latent_gate,
    read_gate,
    read_gated,
    write_gate,
    write_gated,
)
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
        gate: ``""`` (every latent position coded), ``"mask"`` (the front's mask, sent) or
            ``"derived"`` (from the hyper-latent); see :mod:`codec.gate`.

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
        gate: str = "",
    ) -> None:
        super().__init__()
        if in_channels < 1 or N < 1 or M < 1 or downsample < 0 or hyper_downsample < 0:
            raise ValueError("HyperpriorCodec: channels must be ≥ 1 and stage counts ≥ 0")
        if gate and gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; known: {', '.join(GATES)}")
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
        self.gate = gate
        # "derived": the gate's logit from (σ, μ), built last so other weights seed as before
        self.gate_net = None
        if gate == "derived":  # every position open at the start (logit 2), as a mask unit
            self.gate_net = nn.Sequential(nn.Conv2d(2 * M, 1, 1))
            nn.init.zeros_(self.gate_net[0].weight)
            nn.init.constant_(self.gate_net[0].bias, 2.0)

    def preview(self, y_hat: Tensor, size: tuple[int, int]) -> Tensor | None:
        """``g_r(Ŷ)`` cropped to the input ``size`` ``(H, W)``, if the codec has ``g_r``."""
        return None if self.g_r is None else self.g_r(y_hat, size)

    def forward(self, f: Tensor, mask: Tensor | None = None) -> BaseOutput:
        """Training/validation pass on features ``f`` ``(B, C, h, w)`` (``mask``: the front's
        ``(B, 1, h, w)``, for the ``"mask"`` gate; ``None``: every position)."""
        h, w = f.shape[-2:]
        latent = self.latent_forward(self.g_a(self.pad(f)))
        y_hat, likelihoods = latent.y_hat, latent.likelihoods
        if self.gate:
            if self.gate == "mask":
                gate = self._mask_gate(mask, f)
            else:
                # the gate learns from the entropy parameters without reshaping them
                params = torch.cat([latent.scales, latent.means], 1).detach()
                logit = self._gate_net(params)
                soft = torch.sigmoid(logit)
                gate = (logit >= 0).to(soft.dtype) + (soft - soft.detach())  # straight-through
            y_hat, gated = apply_gate(y_hat, latent.means, likelihoods["y"], gate)
            likelihoods = {**likelihoods, "y": gated}
        f_hat = self.g_s(y_hat)[..., :h, :w]
        size = (h * self.input_stride, w * self.input_stride)
        preview = self.preview(y_hat.detach() if self.detach_preview else y_hat, size)
        return BaseOutput(f_hat, likelihoods, y_hat, preview)

    @property
    def _gate_net(self) -> nn.Module:
        assert self.gate_net is not None
        return self.gate_net

    def latent_size(self, h: int, w: int) -> tuple[int, int]:
        """The latent positions that features of size ``h×w`` reach (the rest is padding,
        which a ``"mask"`` gate keeps closed without sending it)."""
        factor = 2**self.downsample
        return -(-h // factor), -(-w // factor)

    def _mask_gate(self, mask: Tensor | None, f: Tensor) -> Tensor:
        """The latent gate of a front mask on ``f``'s grid (all open without one)."""
        if mask is None:
            mask = f.new_ones(f.shape[0], 1, *f.shape[-2:])
        elif mask.shape[-2:] != f.shape[-2:] or mask.shape[0] != f.shape[0]:
            raise ValueError(f"mask {tuple(mask.shape)} does not cover features {tuple(f.shape)}")
        return latent_gate(mask, self.multiple, self.downsample)

    def _derived_gate(self, hyper: Tensor, mode: CodingMode, device: torch.device) -> Tensor:
        """The ``"derived"`` gate ``(B, 1, h, w)`` from the coding ``(σ, μ)``
        (:meth:`coding_hyper`), in fixed point for exact modes (the same integers, so the same
        gate, on every device)."""
        net = self.exact("gate_net") if mode.exact else self._gate_net
        return (net(hyper) >= 0).float().to(device)

    def _coding_gate(
        self, z_hat: Tensor, mode: CodingMode, mask: Tensor | None, f: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(indexes, μ, gate)`` for coding: the hyperprior evaluated once; the gate derived
        from it, or the front's (``f`` given: the encoder), or ``None`` (read from the
        string)."""
        hyper = self.coding_hyper(z_hat, None, mode)
        indexes, means = self.parameters_of(hyper, mode, z_hat.device)
        if self.gate == "derived":
            return indexes, means, self._derived_gate(hyper, mode, z_hat.device)
        return indexes, means, None if f is None else self._mask_gate(mask, f)

    @torch.no_grad()
    def compress(self, f: Tensor, mode: CodingMode = EXACT, mask: Tensor | None = None) -> BaseCode:
        """Entropy-code features ``f`` ``(B, C, h, w)`` (``mask``: see :meth:`forward`)."""
        y = self.g_a(self.pad(f))
        if not self.gate:
            y_strings, z_strings, y_hat = self.latent_compress(y, mode=mode)
            return BaseCode(y_strings, z_strings, y_hat)
        z_strings, z_cat = self.hyper_compress(y, mode)
        indexes, means, gate = self._coding_gate(z_cat, mode, mask, f)
        assert gate is not None
        y_strings, y_hat = [], []
        for i in range(y.shape[0]):
            writer = RansWriter(checked=mode.checked)
            if self.gate == "mask":
                write_gate(writer, gate[i : i + 1], self.latent_size(*f.shape[-2:]))
            one = slice(i, i + 1)
            y_hat.append(
                write_gated(writer, self.entropy_y, y[one], indexes[one], means[one], gate[one])
            )
            y_strings.append(writer.flush())
        return BaseCode(y_strings, z_strings, torch.cat(y_hat))

    @torch.no_grad()
    def decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        size: tuple[int, int],
        mode: CodingMode = EXACT,
    ) -> tuple[Tensor, Tensor]:
        """Decode ``(F̂, Ŷ)`` for features of spatial ``size`` ``(h, w)``."""
        z_size = self.hyper_size(*size)
        if not self.gate:
            y_hat = self.latent_decompress(y_strings, z_strings, z_size, mode=mode)
        else:
            y_hat = self._gated_decompress(
                y_strings, z_strings, z_size, self.latent_size(*size), mode
            )
        f_hat = self.g_s(y_hat)[..., : size[0], : size[1]]
        return f_hat, y_hat

    def _gated_decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        z_size: tuple[int, int],
        valid: tuple[int, int],
        mode: CodingMode,
    ) -> Tensor:
        z_cat = self.hyper_decompress(z_strings, z_size, mode)
        indexes, means, derived = self._coding_gate(z_cat, mode, None, None)
        grid = tuple(means.shape[-2:])
        y_hat = []
        for i, string in enumerate(y_strings):
            reader = RansReader(string, checked=mode.checked)
            gate = read_gate(reader, valid, grid) if derived is None else derived[i : i + 1]
            one = slice(i, i + 1)
            y_hat.append(read_gated(reader, self.entropy_y, indexes[one], means[one], gate))
            reader.finish("the latent")
        return torch.cat(y_hat)
