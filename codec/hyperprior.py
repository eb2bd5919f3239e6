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
and straight-through rounding for what the synthesis sees; coding is real (rANS). The decoder's
``Ŷ`` equals the encoder's exactly because both compute the table indexes and ``μ`` from the
same decoded ``Ẑ`` and context — on any device, because coding evaluates ``h_s``, the context
networks and ``params`` in fixed point (:mod:`codec.exact`, :data:`EXACT`) — and each string
ends in a check of the indexes, symbols and ``Ŷ`` (:class:`~codec.entropy.RansWriter`), so a
decoder that still diverges stops instead of returning garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.codec.coding_mode import EXACT, CodingMode
from featcodec.codec.entropy import FactorizedCoder, GaussianCoder, RansReader, RansWriter
from featcodec.codec.exact import ExactNetwork, from_fixed, scale_indexes, to_fixed
from featcodec.codec.fingerprint import Stamp, version_stamp


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
        self._exact_networks: dict[str, tuple[Stamp, ExactNetwork]] = {}

    def entropy_parameters(self, z_hat: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(σ, μ)`` of ``Y`` from ``Ẑ`` and the context (already on ``Y``'s grid), in float:
        the training path, and the coding path of :data:`FLOAT` and :data:`LEGACY` streams."""
        hyper = self.h_s(z_hat)
        if context is not None:
            hyper = torch.cat([hyper, context], 1)
        if self.params is not None:
            hyper = self.params(hyper)
        scales, means = hyper.chunk(2, 1)
        return scales, means

    def exact(self, name: str) -> ExactNetwork:
        """The fixed-point copy of the submodule ``name`` (dotted for a nested one,
        :mod:`codec.exact`), rebuilt when its weights have changed."""
        module = self.get_submodule(name)
        stamp = version_stamp(module.parameters())
        cached = self._exact_networks.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, ExactNetwork(module))
            self._exact_networks[name] = cached
        return cached[1]

    def coding_parameters(
        self, z_hat: Tensor, context: Tensor | None, mode: CodingMode
    ) -> tuple[Tensor, Tensor]:
        """What codes ``Y``: the scale table index of every element (int32, CPU) and ``μ``.

        ``mode.exact``: both from the fixed-point networks (the context is then fixed point
        too, see :meth:`context_of`), the same on every device; otherwise from
        :meth:`entropy_parameters` in float.
        """
        hyper = self.coding_hyper(z_hat, context, mode)
        return self.parameters_of(hyper, mode, z_hat.device)

    def coding_hyper(self, z_hat: Tensor, context: Tensor | None, mode: CodingMode) -> Tensor:
        """``(σ, μ)`` stacked on the channels, as coding computes them: fixed-point integers
        for ``mode.exact`` (the same on every device), else float."""
        if not mode.exact:
            return torch.cat(self.entropy_parameters(z_hat, context), 1)
        q = self.exact("h_s")(to_fixed(z_hat))
        if context is not None:
            q = torch.cat([q, context.to(q.device)], 1)
        if self.params is not None:
            q = self.exact("params")(q)
        return q

    def parameters_of(
        self, hyper: Tensor, mode: CodingMode, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """:meth:`coding_parameters` from :meth:`coding_hyper`'s ``(σ, μ)``: the table indexes
        (int32, CPU) and ``μ`` on ``device``."""
        sigma, mu = hyper.chunk(2, 1)
        coder = self.entropy_y
        if not mode.exact:
            return coder.build_indexes(sigma).cpu(), mu
        indexes = scale_indexes(sigma, coder.scale_min, coder.scale_max, coder.levels)
        return indexes, from_fixed(mu).to(device)

    def context_of(self, name: str, x: Tensor, mode: CodingMode) -> Tensor:
        """The submodule ``name`` (a context network) applied to ``x``: in float, or for
        ``mode.exact`` in fixed point (an input of fixed point integers out)."""
        if not mode.exact:
            return getattr(self, name)(x)
        return self.exact(name)(to_fixed(x))

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

    def _write_latent(
        self, writer: RansWriter, y: Tensor, indexes: Tensor, means: Tensor
    ) -> Tensor:
        y_hat = self.entropy_y.write_indexed(writer, y, indexes, means)
        writer.mix(y_hat)  # the check covers Ŷ itself, so μ too
        return y_hat

    def _read_latent(self, reader: RansReader, indexes: Tensor, means: Tensor) -> Tensor:
        y_hat = self.entropy_y.read_indexed(reader, indexes, means)
        reader.mix(y_hat)
        return y_hat

    @torch.no_grad()
    def hyper_compress(self, y: Tensor, mode: CodingMode = EXACT) -> tuple[list[bytes], Tensor]:
        """One rANS string of ``Ẑ = Q(h_a(Y))`` per batch element, and ``Ẑ``."""
        z = self.h_a(y)
        z_strings, z_hat = [], []
        for i in range(y.shape[0]):
            writer = RansWriter(checked=mode.checked)
            z_hat.append(self.entropy_z.write(writer, z[i : i + 1]))
            z_strings.append(writer.flush())
        return z_strings, torch.cat(z_hat)

    @torch.no_grad()
    def hyper_decompress(
        self, z_strings: list[bytes], z_size: tuple[int, int], mode: CodingMode = EXACT
    ) -> Tensor:
        """``Ẑ`` from the strings of :meth:`hyper_compress`; ``z_size`` is ``Z``'s grid."""
        z_hat = []
        for string in z_strings:
            reader = RansReader(string, checked=mode.checked)
            z_hat.append(self.entropy_z.read(reader, z_size))
            reader.finish("the hyper-latent")
        return torch.cat(z_hat)

    @torch.no_grad()
    def latent_compress(
        self, y: Tensor, context: Tensor | None = None, mode: CodingMode = EXACT
    ) -> tuple[list[bytes], list[bytes], Tensor]:
        """``(y_strings, z_strings, Ŷ)``: one rANS string of ``Ẑ`` and one of ``Ŷ`` per batch
        element, and the ``Ŷ`` the decoder will reproduce. ``mode.checked``: each string ends
        in a check of what it decodes to (:class:`~codec.entropy.RansWriter`)."""
        z_strings, z_hat = self.hyper_compress(y, mode)
        indexes, means = self.coding_parameters(z_hat, context, mode)
        y_strings, y_hat = [], []
        for i in range(y.shape[0]):
            writer = RansWriter(checked=mode.checked)
            y_hat.append(
                self._write_latent(writer, y[i : i + 1], indexes[i : i + 1], means[i : i + 1])
            )
            y_strings.append(writer.flush())
        return y_strings, z_strings, torch.cat(y_hat)

    @torch.no_grad()
    def latent_decompress(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        z_size: tuple[int, int],
        context: Tensor | None = None,
        mode: CodingMode = EXACT,
    ) -> Tensor:
        """``Ŷ`` from the strings of :meth:`latent_compress`; ``z_size`` is ``Z``'s grid."""
        z_hat = self.hyper_decompress(z_strings, z_size, mode)
        indexes, means = self.coding_parameters(z_hat, context, mode)
        y_hat = []
        for i, string in enumerate(y_strings):
            reader = RansReader(string, checked=mode.checked)
            y_hat.append(self._read_latent(reader, indexes[i : i + 1], means[i : i + 1]))
            reader.finish("the latent")
        return torch.cat(y_hat)

    @torch.no_grad()
    def latent_write(
        self, y: Tensor, context: Tensor | None = None, mode: CodingMode = EXACT
    ) -> tuple[list[bytes], Tensor]:
        """One rANS string per batch element holding ``Ẑ`` then ``Ŷ`` (one flush instead of
        two), and ``Ŷ``."""
        z = self.h_a(y)
        writers = [RansWriter(checked=mode.checked) for _ in range(y.shape[0])]
        z_hat = torch.cat([self.entropy_z.write(w, z[i : i + 1]) for i, w in enumerate(writers)])
        indexes, means = self.coding_parameters(z_hat, context, mode)
        y_hat = torch.cat(
            [
                self._write_latent(w, y[i : i + 1], indexes[i : i + 1], means[i : i + 1])
                for i, w in enumerate(writers)
            ]
        )
        return [w.flush() for w in writers], y_hat

    @torch.no_grad()
    def latent_read(
        self,
        strings: list[bytes],
        z_size: tuple[int, int],
        context: Tensor | None = None,
        mode: CodingMode = EXACT,
    ) -> Tensor:
        """``Ŷ`` from the strings of :meth:`latent_write`; each string must end where its
        symbols do, in its check (:meth:`RansReader.finish`)."""
        readers = [RansReader(s, checked=mode.checked) for s in strings]
        z_hat = torch.cat([self.entropy_z.read(r, z_size) for r in readers])
        indexes, means = self.coding_parameters(z_hat, context, mode)
        y_hat = torch.cat(
            [
                self._read_latent(r, indexes[i : i + 1], means[i : i + 1])
                for i, r in enumerate(readers)
            ]
        )
        for r in readers:
            r.finish("the latents")
        return y_hat
