"""Mask-gated coding of the base latent (codec/gate.py): only gated positions are coded."""

from __future__ import annotations

import math

import pytest
import torch

from featcodec.codec.base import HyperpriorCodec
from featcodec.codec.bitstream import SectionKind
from featcodec.codec.coding_mode import EXACT, FLOAT
from featcodec.codec.config import ArchConfig
from featcodec.codec.entropy import RansReader, RansWriter
from featcodec.codec.errors import BitstreamError, CheckpointError
from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.gate import LEVELS, gate_tables, latent_gate, read_gate, write_gate


def _roundtrip(gate: torch.Tensor) -> tuple[torch.Tensor, int]:
    writer = RansWriter(checked=True)
    write_gate(writer, gate, tuple(gate.shape[-2:]))
    string = writer.flush()
    reader = RansReader(string, checked=True)
    back = read_gate(reader, tuple(gate.shape[-2:]))
    reader.finish("the gate")
    return back, len(string)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.97, 1.0])
def test_gate_bits_round_trip_near_their_entropy(density) -> None:
    g = torch.Generator().manual_seed(0)
    gate = (torch.rand(1, 1, 40, 50, generator=g) < density).float()
    back, nbytes = _roundtrip(gate)
    assert torch.equal(back, gate)
    p = min(max(gate.mean().item(), 1e-3), 1 - 1e-3)
    entropy = -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) * gate.numel() / 8
    assert nbytes <= entropy * 1.1 + 16  # the level, the coder's flush and table granularity


def test_forged_gate_symbols_are_refused() -> None:
    tables = gate_tables()
    writer = RansWriter()
    writer.write(torch.tensor([LEVELS + 5]), torch.tensor([LEVELS], dtype=torch.int32), tables)
    with pytest.raises(BitstreamError, match="level 37"):
        read_gate(RansReader(writer.flush()), (2, 2))
    writer = RansWriter()
    writer.write(torch.tensor([3]), torch.tensor([LEVELS], dtype=torch.int32), tables)
    writer.write(torch.tensor([0, 1, 2, 0]), torch.full((4,), 3, dtype=torch.int32), tables)
    with pytest.raises(BitstreamError, match="not a bit"):
        read_gate(RansReader(writer.flush()), (2, 2))


def test_latent_gate_pads_and_pools_like_the_features() -> None:
    mask = torch.zeros(1, 1, 6, 5)
    mask[0, 0, 5, 4] = 1  # the bottom-right feature pixel
    gate = latent_gate(mask, multiple=8, downsample=1)  # padded to 8×8, pooled to 4×4
    assert gate.shape == (1, 1, 4, 4)
    assert gate[0, 0].nonzero().tolist() == [[2, 2]]


def _codec(gate: str) -> HyperpriorCodec:
    torch.manual_seed(0)
    return HyperpriorCodec(8, N=8, M=8, attention=False, gate=gate).eval()


@pytest.mark.parametrize("mode", [EXACT, FLOAT])
def test_mask_gate_codes_only_open_positions(mode) -> None:
    codec = _codec("mask")
    f = torch.randn(2, 8, 12, 16) * 4
    mask = torch.zeros(2, 1, 12, 16)
    mask[0, :, :6, :8] = 1  # a quarter of the first element, nothing of the second
    code = codec.compress(f, mode, mask)
    full = codec.compress(f, mode, None)  # every position
    assert all(len(a) < len(b) for a, b in zip(code.y, full.y, strict=True))
    f_hat, y_hat = codec.decompress(code.y, code.z, (12, 16), mode)
    assert torch.equal(y_hat, code.y_hat)
    gate = latent_gate(mask, codec.multiple, codec.downsample).expand_as(y_hat) > 0
    _, means = codec.coding_parameters(
        codec.hyper_decompress(code.z, codec.hyper_size(12, 16), mode), None, mode
    )
    assert torch.equal(y_hat[~gate], means[~gate])  # closed positions: the mean
    assert not torch.equal(y_hat[gate], means[gate])
    out = codec.train()(f, mask)  # training: no bits where closed
    closed = ~latent_gate(mask, codec.multiple, codec.downsample).expand_as(out.y_hat).bool()
    assert torch.all(out.likelihoods["y"][closed] == 1)


@pytest.mark.parametrize("mode", [EXACT, FLOAT])
def test_derived_gate_round_trips_and_learns(mode) -> None:
    codec = _codec("derived")
    f = torch.randn(1, 8, 16, 16) * 4
    f[..., 8:, :] *= 10  # hyper-latent positions that differ
    with torch.no_grad():  # gate on the first scale channel against its median
        z_hat = codec.hyper_decompress(codec.compress(f, FLOAT).z, (2, 2), FLOAT)
        scales, means = codec.entropy_parameters(z_hat, None)
        params = torch.cat([scales, means], 1)
        channel = int(params.flatten(2).std(-1)[0].argmax())
        codec.gate_net[0].weight.zero_()
        codec.gate_net[0].weight[0, channel] = 1.0
        codec.gate_net[0].bias.fill_(-float(params[0, channel].median()) - 1e-3)
    code = codec.compress(f, mode)
    _, y_hat = codec.decompress(code.y, code.z, (16, 16), mode)
    assert torch.equal(y_hat, code.y_hat)
    opened = codec._coding_gate(codec.hyper_decompress(code.z, (2, 2), mode), mode, None, None)[2]
    assert 0 < opened.mean() < 1  # some positions closed, some open
    codec.train()
    out = codec(f)
    (
        out.features_hat.square().mean() + sum(-l.log2().sum() for l in out.likelihoods.values())
    ).backward()
    assert codec.gate_net[0].weight.grad.abs().sum() > 0  # straight-through


def test_gated_codecs_in_the_architecture(tiny_arch) -> None:
    from conftest import TINY

    with pytest.raises(CheckpointError, match="unknown gate 'sometimes'"):
        ArchConfig.parse({**tiny_arch, "codec": {**TINY, "gate": "sometimes"}})
    with pytest.raises(CheckpointError, match="needs a front that ends in its last sparse stage"):
        ArchConfig.parse({**tiny_arch, "codec": {**TINY, "gate": "mask"}})
    derived = Codec.build(default_arch(codec={**TINY, "gate": "derived"})).eval()
    x = torch.rand(3, 32, 40)
    assert derived.decode(derived.encode(x)).output.shape == (1, 5)
    arch = {**default_arch(codec={**TINY, "gate": "mask"}), "sparse": "layer2"}
    torch.manual_seed(0)
    masked = Codec.build(arch).eval()
    from featcodec.models.sparse import sparse_blocks

    for _, block in sparse_blocks(masked.front):
        block.mask_unit.conv.weight.data.normal_(0, 0.5)
        block.mask_unit.conv.bias.data.zero_()
    stream = masked.encode(x)
    mask = masked.front_mask()
    assert mask is not None and 0 < mask.mean() < 1
    every = masked.encode_features(masked.features(x[None]))  # no mask known: all coded
    assert stream != every  # the front's mask gated the first (the byte savings: above)
    decoded = masked.decode(stream)
    assert decoded.output.shape == (1, 5)
    y_hat = masked.base.decompress(
        [decoded.stream.section(SectionKind.BASE)],
        [decoded.stream.section(SectionKind.HYPER)],
        tuple(decoded.features.shape[-2:]),
    )[1]
    assert torch.equal(y_hat, masked.base.compress(masked.features(x[None]), EXACT, mask).y_hat)


def test_corrupt_gated_streams_fail_with_one_error(tiny_arch) -> None:
    from conftest import TINY

    torch.manual_seed(0)
    arch = {**default_arch(codec={**TINY, "gate": "mask"}), "sparse": "layer2"}
    codec = Codec.build(arch).eval()
    from featcodec.models.sparse import sparse_blocks

    for _, block in sparse_blocks(codec.front):
        block.mask_unit.conv.weight.data.normal_(0, 0.5)
        block.mask_unit.conv.bias.data.zero_()
    stream = codec.encode(torch.rand(3, 48, 48))
    g = torch.Generator().manual_seed(1)
    refused = 0
    for _ in range(60):
        data = bytearray(stream)
        at = int(torch.randint(len(data) - 40, (1,), generator=g)) + 40  # past the header
        data[at] ^= 1 << int(torch.randint(8, (1,), generator=g))
        try:
            codec.decode(bytes(data))
        except BitstreamError:
            refused += 1
    assert refused == 60  # CRCs, the rANS check and the gate's own checks
    for cut in (len(stream) - 1, len(stream) // 2):
        with pytest.raises(BitstreamError):
            codec.decode(stream[:cut])


def test_a_new_derived_gate_opens_every_position() -> None:
    codec = _codec("derived")
    f = torch.randn(2, 8, 16, 16) * 4
    z_hat = codec.hyper_decompress(codec.compress(f).z, (2, 2))
    assert (
        codec._coding_gate(z_hat, EXACT, None, None)[2].min() == 1
    )  # training starts from the plain codec


def test_gated_rate_has_a_bounded_gradient_in_the_gate() -> None:
    from featcodec.codec.entropy import bits
    from featcodec.codec.gate import apply_gate

    likelihoods = torch.tensor([[[[1e-6, 0.5]], [[0.25, 0.9]]]])  # (1, 2, 1, 2)
    gate = torch.tensor([[[[1.0, 0.0]]]], requires_grad=True)
    y_hat, gated = apply_gate(torch.zeros(1, 2, 1, 2), torch.ones(1, 2, 1, 2), likelihoods, gate)
    assert torch.equal(gated[..., 1], torch.ones(1, 2, 1))  # closed: no bits
    assert torch.equal(y_hat[..., 1], torch.ones(1, 2, 1))  # closed: the mean
    bits(gated).backward()
    expected = -torch.log2(likelihoods).sum(1, keepdim=True)  # the bits a gate would spend
    assert torch.allclose(gate.grad, expected)


def test_padding_positions_of_the_gate_are_not_sent() -> None:
    gate = torch.zeros(1, 1, 8, 8)
    gate[..., :6, :6] = (
        torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.5
    ).float()
    writer = RansWriter(checked=True)
    write_gate(writer, gate, (6, 6))
    reader = RansReader(writer.flush(), checked=True)
    assert torch.equal(read_gate(reader, (6, 6), (8, 8)), gate)
    reader.finish()
