"""The one conditional hyperprior of featcodec: the entropy model of the base layer, of the
enhancement layer (conditioned on the decoded base) and of P-frames (conditioned on the
motion-compensated prediction).

Ballé et al., "Variational image compression with a scale hyperprior" (ICLR 2018), mean–scale
variant, built on compressai's entropy models (:mod:`codec.entropy`), with a context::

    Y ──h_a──▶ Z ──[factorized]──▶ Ẑ ──h_s──▶ H ──┐
                                     context C ──┴── params([H, C]) ──▶ (σ, μ)
    Y ──[Gaussian(μ, σ)]──▶ Ŷ = round(Y − μ) + μ

    base layer    no context; h_s gives (σ, μ) itself (no ``params``)
    enhancement   C = c(Ŷ_b), the decoded base latent resampled to Y's grid
    P-frame       C = c(F̃_t, mask), the prediction and where it is valid

A codec subclasses :class:`ConditionalHyperprior`, builds its ``h_a``, ``h_s``, ``params`` and
the two entropy models, and its own analysis, synthesis and context network; the coding of
``Y`` given a context is written once, here. Training passes use noisy likelihoods for the rate
and straight-through rounding for what the synthesis sees; coding is real (rANS), and the
decoder's ``Ŷ`` equals the encoder's exactly because both compute ``(σ, μ)`` from the same
decoded ``Ẑ`` and context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.codec.entropy import FactorizedCoder, GaussianCoder, RansReader, RansWriter


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class StridedStages:
    """Sizes of a codec whose analysis halves the input ``downsample`` times and whose hyper
    analysis halves the latent ``hyper_downsample`` times (both set by the subclass)."""

    downsample: int
    hyper_downsample: int

    @property
    def multiple(self) -> int:
        """Inputs are padded to a multiple of this."""
        return 2 ** (self.downsample + self.hyper_downsample)

    def pad(self, t: Tensor) -> Tensor:
        """``t`` zero-padded at the bottom and right to a multiple of :attr:`multiple`."""
        h, w = t.shape[-2:]
        m = self.multiple
        return F.pad(t, (0, (-w) % m, 0, (-h) % m))

    def hyper_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of ``Z`` for an input of size ``h×w``."""
        m = self.multiple
        return -(-h // m), -(-w // m)


def hyper_transforms(M: int, N: int, stages: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The layers of ``h_a`` (``Y``, M channels → ``Z``, N channels, halved ``stages`` times)
    and the common part of ``h_s`` (back up ``stages`` times, N channels); each codec ends
    ``h_s`` its own way. Built stage by stage, in the order every codec always built them."""
    from compressai.models.utils import conv, deconv

    h_a: list[nn.Module] = [conv(M, N, 3, 1)]
    h_s: list[nn.Module] = []
    for _ in range(stages):
        h_a += [nn.ReLU(inplace=True), conv(N, N)]
        h_s += [deconv(N, N), nn.ReLU(inplace=True)]
    return h_a, h_s


@dataclass
class LatentOutput:
    """Training pass of the hyperprior: ``Ŷ`` (straight-through rounded), the likelihoods of
    ``Y`` and ``Z`` (estimates, for the rate term) and the Gaussian parameters."""

    y_hat: Tensor
    likelihoods: dict[str, Tensor]
    scales: Tensor
    means: Tensor


class ConditionalHyperprior(StridedStages, nn.Module):
    """Codes a latent ``Y`` (B, M, h, w) given an optional context (B, ·, h, w).

    Subclasses set ``h_a``, ``h_s``, ``entropy_z`` (:class:`FactorizedCoder`), ``entropy_y``
    (:class:`GaussianCoder`) and ``params`` (``None``: ``h_s`` gives ``(σ, μ)``), in their own
    order, so that seeded weights and checkpoint names are theirs.
    """

    h_a: nn.Module
    h_s: nn.Module
    params: nn.Module | None
    entropy_z: FactorizedCoder
    entropy_y: GaussianCoder

    def __init__(self) -> None:
        super().__init__()
        self.params = None  # a module attribute: a class-level default would hide the module

    def entropy_parameters(self, z_hat: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(σ, μ)`` of ``Y`` from ``Ẑ`` and the context (already on ``Y``'s grid)."""
        hyper = self.h_s(z_hat)
        if context is not None:
            hyper = torch.cat([hyper, context], 1)
        if self.params is not None:
            hyper = self.params(hyper)
        scales, means = hyper.chunk(2, 1)
        return scales, means

    def latent_forward(self, y: Tensor, context: Tensor | None = None) -> LatentOutput:
        """Training/validation pass: noisy likelihoods, straight-through ``Ŷ``."""
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_z(z)
        medians = self.entropy_z._get_medians().reshape(1, -1, 1, 1)
        z_hat = ste_round(z - medians) + medians
        scales, means = self.entropy_parameters(z_hat, context)
        _, y_likelihoods = self.entropy_y(y, scales, means)
        y_hat = ste_round(y - means) + means
        return LatentOutput(y_hat, {"y": y_likelihoods, "z": z_likelihoods}, scales, means)

    def aux_loss(self) -> Tensor:
        """Quantile loss of the factorized model (its own optimizer minimizes it)."""
        return self.entropy_z.loss()

    @torch.no_grad()
    def latent_compress(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[list[bytes], list[bytes], Tensor]:
        """``(y_strings, z_strings, Ŷ)``: one rANS string of ``Ẑ`` and one of ``Ŷ`` per batch
        element, and the ``Ŷ`` the decoder will reproduce."""
        z = self.h_a(y)
        z_strings = self.entropy_z.encode(z)
        z_hat = self.entropy_z.decode(z_strings, tuple(z.shape[-2:]))
        scales, means = self.entropy_parameters(z_hat, context)
        y_strings = self.entropy_y.encode(y, scales, means)
        return y_strings, z_strings, torch.round(y - means) + means

    @torch.no_grad()
    def latent_decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        z_size: tuple[int, int],
        context: Tensor | None = None,
    ) -> Tensor:
        """``Ŷ`` from the strings of :meth:`latent_compress`; ``z_size`` is ``Z``'s grid."""
        z_hat = self.entropy_z.decode(z_strings, z_size)
        scales, means = self.entropy_parameters(z_hat, context)
        return self.entropy_y.decode(y_strings, scales, means)

    @torch.no_grad()
    def latent_write(self, y: Tensor, context: Tensor | None = None) -> tuple[list[bytes], Tensor]:
        """One rANS string per batch element holding ``Ẑ`` then ``Ŷ`` (one flush instead of
        two), and ``Ŷ``."""
        z = self.h_a(y)
        writers = [RansWriter() for _ in range(y.shape[0])]
        z_hat = torch.cat([self.entropy_z.write(w, z[i : i + 1]) for i, w in enumerate(writers)])
        scales, means = self.entropy_parameters(z_hat, context)
        y_hat = torch.cat(
            [
                self.entropy_y.write(w, y[i : i + 1], scales[i : i + 1], means[i : i + 1])
                for i, w in enumerate(writers)
            ]
        )
        return [w.flush() for w in writers], y_hat

    @torch.no_grad()
    def latent_read(
        self, strings: list[bytes], z_size: tuple[int, int], context: Tensor | None = None
    ) -> Tensor:
        """``Ŷ`` from the strings of :meth:`latent_write`; each string must end where its
        symbols do (:meth:`RansReader.finish`)."""
        readers = [RansReader(s) for s in strings]
        z_hat = torch.cat([self.entropy_z.read(r, z_size) for r in readers])
        scales, means = self.entropy_parameters(z_hat, context)
        y_hat = torch.cat(
            [
                self.entropy_y.read(r, scales[i : i + 1], means[i : i + 1])
                for i, r in enumerate(readers)
            ]
        )
        for r in readers:
            r.finish()
        return y_hat
