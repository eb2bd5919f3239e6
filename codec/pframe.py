"""The P-frame codec: a feature tensor ``F_t`` coded given its motion-compensated prediction
``F̃_t`` (:mod:`codec.motion`), the inter half of :mod:`codec.video`::

    F_t ─ g_a(F_t, c(F̃_t, mask)) ─▶ Y ─ h_a ─▶ Z ─▶ [factorized] ─▶ Ẑ
    (μ, σ) = e(h_s(Ẑ), c(F̃_t, mask)) ─▶ [Gaussian] ─▶ Ŷ
    F̂_t = F̃_t + g_s(Ŷ, c'(F̃_t, mask))

``conditional=True`` (the default): the prediction and its validity mask condition the
analysis, the entropy parameters and the synthesis, the way the enhancement layer conditions
on the base (:mod:`codec.enhancement`); ``conditional=False``: the residual ``F_t − F̃_t`` is
coded with a plain hyperprior and added back. The entropy model is featcodec's one
:class:`~codec.hyperprior.ConditionalHyperprior`, its context ``c(F̃_t, mask)``; ``Ẑ`` and
``Ŷ`` of a frame share one rANS string (:class:`codec.entropy.RansWriter`): one flush instead
of two.

``refine=k`` (k odd) refines the prediction before anything uses it: the warp is the
permutation half of Lenc & Vedaldi's equivariance map ``M_g`` (:mod:`models.equivariance`),
and a ``k × k`` filter bank conditioned on the coded motion (its local Jacobian and the
warp's blur at each position, :func:`~models.equivariance.motion_descriptors`) is the other
half, trained with the codec: ``F̃_t = bank(warp(F̂_{t−1}, ṽ_t), d(ṽ_t))``. It starts as the
identity (the warp alone) and runs in fixed point for a video coded device-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressai.models.sensetime import ResidualBottleneckBlock
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from featcodec.codec.coding_mode import EXACT, CodingMode
from featcodec.codec.entropy import FactorizedCoder, GaussianCoder
from featcodec.codec.exact import (
    EXACT_LIMIT,
    FRAC_BITS,
    RangeExceeded,
    from_fixed,
    round_shift,
    to_fixed,
)
from featcodec.codec.hyperprior import ConditionalHyperprior, hyper_transforms
from featcodec.codec.registry import register_codec
from featcodec.models.equivariance import DESCRIPTORS, FilterBank, motion_descriptors


@dataclass
class PFrameOutput:
    """Training pass: the reconstruction ``F̂_t`` and the latents' likelihoods."""

    features_hat: Tensor
    likelihoods: dict[str, Tensor]


@dataclass
class PFrameCode:
    """One rANS string per batch element holding ``Ẑ`` then ``Ŷ``, and the reconstruction
    the decoder will compute (the next frame's reference)."""

    strings: list[bytes]
    features_hat: Tensor


def _down(in_channels: int, out_channels: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = [conv(in_channels, out_channels, 3, 1)]
    for _ in range(stages):
        layers += [nn.ReLU(inplace=True), conv(out_channels, out_channels)]
    return nn.Sequential(*layers)


@register_codec("pframe")
class PFrameCodec(ConditionalHyperprior):
    """Codes a feature tensor ``F_t`` given its motion-compensated prediction ``F̃_t``.

    Args:
        channels: channels ``C`` of the feature tensor.
        N: width of the transforms and channels of ``Z``.
        M: channels of the latent ``Y``.
        downsample: stride-2 stages of ``g_a`` (the latent is ``2^downsample`` coarser).
        hyper_downsample: stride-2 stages of ``h_a``.
        conditional: condition on the prediction (analysis, entropy parameters, synthesis);
            ``False`` codes the residual ``F_t − F̃_t`` with a plain hyperprior.
        refine: ``k`` of the motion-conditioned filter bank refining the warped prediction
            (odd; 0: the warp alone).
    """

    def __init__(
        self,
        channels: int,
        N: int = 64,
        M: int = 64,
        downsample: int = 1,
        hyper_downsample: int = 2,
        conditional: bool = True,
        refine: int = 0,
    ) -> None:
        super().__init__()
        if min(channels, N, M) < 1 or downsample < 0 or hyper_downsample < 0:
            raise ValueError("PFrameCodec: channels must be ≥ 1 and stage counts ≥ 0")
        if refine < 0 or (refine and refine % 2 == 0):
            raise ValueError(f"PFrameCodec: refine must be 0 or an odd size, not {refine}")
        self.refine = FilterBank(channels, len(DESCRIPTORS), refine) if refine else None
        self.conditional = conditional
        self.downsample, self.hyper_downsample = downsample, hyper_downsample
        context = channels + 1  # the prediction and its validity mask
        g_a: list[nn.Module] = [conv(channels + (context if conditional else 0), N, 3, 1)]
        g_a.append(ResidualBottleneckBlock(N, N))
        g_s: list[nn.Module] = [conv(M, N, 3, 1), ResidualBottleneckBlock(N, N)]
        for _ in range(downsample):
            g_a += [conv(N, N), ResidualBottleneckBlock(N, N)]
            g_s += [deconv(N, N), ResidualBottleneckBlock(N, N)]
        g_a.append(conv(N, M, 3, 1))
        self.g_a, self.g_s = nn.Sequential(*g_a), nn.Sequential(*g_s)
        out = [conv(N + (context if conditional else 0), N, 3, 1), ResidualBottleneckBlock(N, N)]
        self.g_out = nn.Sequential(*out, conv(N, channels, 3, 1))
        nn.init.zeros_(self.g_out[-1].weight)  # start as F̂ = F̃: the prediction as it is
        nn.init.zeros_(self.g_out[-1].bias)
        h_a, h_s = hyper_transforms(M, N, hyper_downsample)
        self.h_a, self.h_s = nn.Sequential(*h_a), nn.Sequential(*h_s, conv(N, N, 3, 1))
        self.context_params = _down(context, N, downsample) if conditional else None
        self.params = nn.Sequential(
            conv((2 if conditional else 1) * N, 2 * M, 1, 1),
            nn.ReLU(inplace=True),
            conv(2 * M, 2 * M, 1, 1),
        )
        self.entropy_z = FactorizedCoder(N)
        self.entropy_y = GaussianCoder()

    def refined(self, prediction: Tensor, flow: Tensor) -> Tensor:
        """The warped reference ``prediction`` (B, C, h, w) refined by the filter bank
        conditioned on the latent ``flow`` (B, 2, h, w) it was warped with (as it is without
        a bank)."""
        if self.refine is None:
            return prediction
        return self.refine(prediction, motion_descriptors(flow.to(prediction)))

    def refined_fixed(self, prediction_q: Tensor, flow: Tensor) -> Tensor:
        """:meth:`refined` in fixed point: the bank's convolution by :mod:`codec.exact`, the
        descriptors (computed on the CPU from the decoded flow) rounded to fixed point, each
        product ``d_k·y_k`` exact in float64 and rounded back once."""
        if self.refine is None:
            return prediction_q
        y = self.exact("refine.conv")(prediction_q)
        d = to_fixed(motion_descriptors(flow.detach().to("cpu", torch.float32))).to(y.device)
        peak = float(d.abs().max()) * float(y.abs().max()) if y.numel() else 0.0
        if peak * (len(DESCRIPTORS) + 1) >= EXACT_LIMIT:
            raise RangeExceeded("a value is beyond the range of the exact prediction (2^53)")
        B, _, h, w = y.shape
        y = y.view(B, len(DESCRIPTORS) + 1, -1, h, w)
        products = (y[:, 1:] * d.unsqueeze(2)).sum(1)  # exact: integers below 2^53
        return y[:, 0] + round_shift(products, FRAC_BITS)

    @staticmethod
    def _context(prediction: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([prediction, mask.to(prediction.dtype)], 1)

    def _analysis(self, f: Tensor, prediction: Tensor, context: Tensor) -> Tensor:
        x = torch.cat([f, context], 1) if self.conditional else f - prediction
        return self.g_a(self.pad(x))

    def _hyper_context(self, context: Tensor, mode: CodingMode | None = None) -> Tensor | None:
        """The hyperprior's context: ``c(F̃_t, mask)`` on the latent's grid (conditional); for
        coding (``mode``), in fixed point when the mode is exact."""
        if self.context_params is None:
            return None
        if mode is None:
            return self.context_params(self.pad(context))
        return self.context_of("context_params", self.pad(context), mode)

    def _synthesis(self, y_hat: Tensor, prediction: Tensor, context: Tensor) -> Tensor:
        h, w = prediction.shape[-2:]
        x = self.g_s(y_hat)[..., :h, :w]
        if self.conditional:
            x = torch.cat([x, context], 1)
        return prediction + self.g_out(x)

    def forward(self, f: Tensor, prediction: Tensor, mask: Tensor) -> PFrameOutput:
        """Training pass on features ``f``, the prediction and its mask (B, 1, h, w)."""
        context = self._context(prediction, mask)
        y = self._analysis(f, prediction, context)
        latent = self.latent_forward(y, self._hyper_context(context))
        f_hat = self._synthesis(latent.y_hat, prediction, context)
        return PFrameOutput(f_hat, latent.likelihoods)

    @torch.no_grad()
    def compress(
        self, f: Tensor, prediction: Tensor, mask: Tensor, mode: CodingMode = EXACT
    ) -> PFrameCode:
        """Entropy-code ``f`` (B, C, h, w) given the prediction, ``Ẑ`` and ``Ŷ`` of each element
        in one rANS string (one flush); also returns ``F̂``."""
        context = self._context(prediction, mask)
        y = self._analysis(f, prediction, context)
        strings, y_hat = self.latent_write(y, self._hyper_context(context, mode), mode)
        return PFrameCode(strings, self._synthesis(y_hat, prediction, context))

    # the fixed-point path (a video coded with EXACT): prediction and reconstruction are
    # fixed-point integers (codec.exact), so the next frame's entropy parameters are exact too

    def _fixed_context(self, prediction_q: Tensor, mask: Tensor) -> Tensor:
        valid = mask.to(device=prediction_q.device, dtype=torch.float64) * (1 << FRAC_BITS)
        return torch.cat([prediction_q.to(torch.float64), valid], 1)

    def _fixed_synthesis(self, y_hat: Tensor, prediction_q: Tensor, context_q: Tensor) -> Tensor:
        h, w = prediction_q.shape[-2:]
        x = self.exact("g_s")(to_fixed(y_hat))[..., :h, :w]
        if self.conditional:
            x = torch.cat([x, context_q.to(x.device)], 1)
        return prediction_q.to(x.device) + self.exact("g_out")(x)

    def _fixed_hyper_context(self, context_q: Tensor) -> Tensor | None:
        if self.context_params is None:
            return None
        return self.exact("context_params")(self.pad(context_q))

    @torch.no_grad()
    def compress_fixed(self, f: Tensor, prediction_q: Tensor, mask: Tensor) -> PFrameCode:
        """:meth:`compress` of a video coded with device-exact parameters: the prediction is
        fixed point (:func:`codec.motion.exact_warp`), and so is the returned ``F̂``; the
        analysis (the encoder's alone) sees the prediction in float."""
        prediction = from_fixed(prediction_q).to(f.device)
        context = self._context(prediction, mask.to(f.device))
        y = self._analysis(f, prediction, context)
        context_q = self._fixed_context(prediction_q, mask)
        strings, y_hat = self.latent_write(y, self._fixed_hyper_context(context_q), EXACT)
        return PFrameCode(strings, self._fixed_synthesis(y_hat, prediction_q, context_q))

    @torch.no_grad()
    def decompress_fixed(self, strings: list[bytes], prediction_q: Tensor, mask: Tensor) -> Tensor:
        """Inverse of :meth:`compress_fixed`: ``F̂`` in fixed point."""
        if len(strings) != prediction_q.shape[0]:
            raise ValueError("one string per batch element")
        context_q = self._fixed_context(prediction_q, mask)
        size = self.hyper_size(*prediction_q.shape[-2:])
        y_hat = self.latent_read(strings, size, self._fixed_hyper_context(context_q), EXACT)
        return self._fixed_synthesis(y_hat, prediction_q, context_q)

    @torch.no_grad()
    def decompress(
        self, strings: list[bytes], prediction: Tensor, mask: Tensor, mode: CodingMode = EXACT
    ) -> Tensor:
        """``F̂`` from the strings and the same prediction and mask as the encoder's."""
        if len(strings) != prediction.shape[0]:
            raise ValueError("one string per batch element")
        context = self._context(prediction, mask)
        size = self.hyper_size(*prediction.shape[-2:])
        y_hat = self.latent_read(strings, size, self._hyper_context(context, mode), mode)
        return self._synthesis(y_hat, prediction, context)
