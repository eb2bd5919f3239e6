"""Device-exact entropy parameters (codec.exact) and the decoder-side check (format version 2).

Proof without a GPU: streams coded with one thread count decode bit for bit with another, and
with every summation of the fixed-point networks perturbed (another algorithm and order, a
channels-last layout, a few ulps off before the integer step); the same perturbation of the
float path is detected by the check and refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressai import ans
from compressai.models.utils import conv, deconv
from perturb import PERTURBATIONS, make_images, make_scalable, nudge_outputs, perturbed

from featcodec.codec import bounded_rans, exact
from featcodec.codec.bitstream import SectionKind, unpack
from featcodec.codec.coding_mode import EXACT, FLOAT, LEGACY
from featcodec.codec.entropy import RANS_FINAL_STATE, FactorizedCoder, GaussianCoder
from featcodec.codec.errors import BitstreamError
from featcodec.codec.facade import Codec
from featcodec.codec.hyperprior import ConditionalHyperprior

# -- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [conv(6, 10, 5, 2), conv(6, 10, 3, 1), conv(6, 10, 1, 1), deconv(6, 10)],
    ids=["conv5s2", "conv3", "conv1", "deconv5s2"],
)
def test_fixed_point_convolution_is_exact(layer: torch.nn.Module) -> None:
    """The accumulators equal torch's float64 convolution of the same integers exactly, and
    the requantized output is the float layer's to within the fixed-point resolution."""
    torch.manual_seed(0)
    e = exact.ExactConv(layer)
    q = torch.randint(-(1 << 16), 1 << 16, (2, 6, 7, 9)).double()
    if e.transposed:
        w = e.weight.flip(-1, -2).transpose(0, 1)
        ref = F.conv_transpose2d(
            q, w, stride=layer.stride, padding=layer.padding, output_padding=layer.output_padding
        )
    else:
        ref = F.conv2d(q, e.weight, stride=layer.stride, padding=layer.padding)
    acc = e.accumulators(q)
    assert torch.equal(acc, ref + e.bias.reshape(1, -1, 1, 1))
    assert bool((acc == acc.round()).all())
    with torch.no_grad():
        float_out = layer.double()(q / (1 << exact.FRAC_BITS))
    out = exact.from_fixed(e(q), torch.float64)
    assert (out - float_out).abs().max() < 1e-3 * (1 + float_out.abs().max())


def test_fixed_point_refuses_what_it_cannot_hold_exactly() -> None:
    e = exact.ExactConv(conv(4, 4, 3, 1))
    with pytest.raises(Exception, match="beyond the range of the exact entropy parameters"):
        e(torch.full((1, 4, 3, 3), 2.0**45))
    big = conv(2, 2, 1, 1)
    with torch.no_grad():
        big.weight.fill_(2.0**20)
    with pytest.raises(ValueError, match="cannot be held exactly"):
        exact.ExactConv(big)


def test_scale_index_thresholds_match_the_float_table() -> None:
    """The integer thresholds pick the level nearest in ln σ, as the float table does; they
    can only differ where σ is within rounding of a boundary."""
    coder = GaussianCoder()
    q = torch.arange(0, 300 << exact.FRAC_BITS, 37, dtype=torch.float64)
    ours = exact.scale_indexes(q, coder.scale_min, coder.scale_max, coder.levels)
    theirs = coder.build_indexes(exact.from_fixed(q))
    assert (ours != theirs).float().mean() < 1e-3
    assert int((ours.long() - theirs.long()).abs().max()) <= 1
    assert int(ours.min()) == 0 and int(ours.max()) == coder.levels - 1


def test_encoder_writes_compressai_strings_and_carries_a_check() -> None:
    """featcodec's rANS encoder writes compressai's bytes exactly (escapes included); a check
    moves the state the decoder ends in and costs at most one word."""
    gauss, fact = GaussianCoder(), FactorizedCoder(4)
    tg, tf = gauss.coding_tables(), fact.coding_tables()
    rng = np.random.default_rng(0)
    for trial in range(40):
        n, m = int(rng.integers(1, 2000)), int(rng.integers(0, 40))
        idx = rng.integers(0, len(tg.lengths), n).astype(np.int32)
        sym = (rng.standard_normal(n) * rng.choice([1, 4, 300, 1e5], n)).round().astype(np.int32)
        idx_f = rng.integers(0, 4, m).astype(np.int32)
        sym_f = rng.integers(-30, 30, m).astype(np.int32)
        peer = ans.BufferedRansEncoder()
        peer.encode_with_indexes(sym_f.tolist(), idx_f.tolist(), *tf.lists)
        peer.encode_with_indexes(sym.tolist(), idx.tolist(), *tg.lists)
        groups = [
            (s, i, t.cdf_array, t.cdf_array.shape[1], t.length_array, t.offset_array)
            for s, i, t in ((sym_f, idx_f, tf), (sym, idx, tg))
        ]
        ref = peer.flush()
        assert bounded_rans.encode(groups, RANS_FINAL_STATE) == ref
        check = int(rng.integers(0, 1 << 31))
        string = bounded_rans.encode(groups, RANS_FINAL_STATE + check)
        assert len(string) - len(ref) in (0, 4)
        state, pos = int.from_bytes(string[:8], "little"), 2
        for s, i, t in ((sym_f, idx_f, tf), (sym, idx, tg)):
            out = np.empty_like(s)
            pos, state = bounded_rans.decode(
                string,
                pos,
                state,
                i,
                t.cdf_array,
                t.cdf_array.shape[1],
                t.length_array,
                t.offset_array,
                out,
            )
            assert np.array_equal(out, s), trial
        assert pos == len(string) // 4 and state == RANS_FINAL_STATE + check


@pytest.fixture(scope="module")
def scalable() -> Codec:
    return make_scalable()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images()


def _streams(codec: Codec, images: torch.Tensor) -> list[bytes]:
    with perturbed(pytest.MonkeyPatch(), None, threads=1):
        return [codec.encode(x, layers="all") for x in images]


def _decode_all(
    codec: Codec, streams: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    """Each stream's entropy-decoded latents (base, enhancement), features and enhanced output."""
    latents: list[torch.Tensor] = []
    decompress = ConditionalHyperprior.latent_decompress

    def recording(self: ConditionalHyperprior, *args: object, **kw: object) -> torch.Tensor:
        y_hat = decompress(self, *args, **kw)
        latents.append(y_hat)
        return y_hat

    out = []
    with monkeypatch.context() as m:
        m.setattr(ConditionalHyperprior, "latent_decompress", recording)
        for s in streams:
            latents.clear()
            d = codec.decode(s)
            assert d.enhanced is not None and len(latents) == 2
            out.append((list(latents), d.features, d.enhanced))
    return out


@pytest.mark.parametrize("name", [None, *PERTURBATIONS], ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_image_and_scalable_streams_decode_bit_exactly_under_perturbation(
    scalable: Codec,
    images: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
    name: str | None,
    threads: int,
) -> None:
    """What entropy decoding reproduces (both layers' Ŷ) is bit-exact under every
    perturbation and thread count. The syntheses after it are float networks: bit-exact with
    the same thread count, within float rounding with another (oneDNN blocks large
    convolutions by thread count; nothing is decoded from them in an image stream)."""
    streams = _streams(scalable, images)  # coded with one thread
    with perturbed(monkeypatch, None, threads=2):
        reference = _decode_all(scalable, streams, monkeypatch)
    with perturbed(monkeypatch, name, threads):
        got = _decode_all(scalable, streams, monkeypatch)
    for (y0, f0, e0), (y1, f1, e1) in zip(reference, got, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(y0, y1, strict=True))
        if threads == 2:
            assert torch.equal(f0, f1) and torch.equal(e0, e1)
        torch.testing.assert_close(f1, f0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(e1, e0, rtol=1e-5, atol=1e-6)
    assert all(unpack(s).mode == EXACT for s in streams)


def test_float_path_divergence_is_detected_by_the_check(
    scalable: Codec, images: torch.Tensor
) -> None:
    """The same kind of perturbation on float entropy parameters (a stream coded with
    FLOAT) is refused by the check with one line naming the layer — never garbage."""
    scalable.coding = FLOAT
    try:
        streams = [scalable.encode(x, layers="all") for x in images]
    finally:
        scalable.coding = EXACT
    assert all(unpack(s).mode == FLOAT for s in streams)
    for s in streams:  # unperturbed: decodes
        scalable.decode(s)
    handle = nudge_outputs(scalable.base.h_s)
    try:
        for s in streams:
            with pytest.raises(BitstreamError, match=r"base layer: .*fails its check") as e:
                scalable.decode(s)
            assert "\n" not in str(e.value)
    finally:
        handle.remove()
    # an exact stream does not care
    exact_stream = scalable.encode(images[0], layers="all")
    handle = nudge_outputs(scalable.base.h_s)
    try:
        scalable.decode(exact_stream)
    finally:
        handle.remove()


def test_legacy_mode_writes_version_1(scalable: Codec, images: torch.Tensor) -> None:
    """Version 1 is still written on request (comparisons) and decoded on the same device."""
    scalable.coding = LEGACY
    try:
        stream = scalable.encode(images[0], layers="all")
    finally:
        scalable.coding = EXACT
    parsed = unpack(stream)
    assert parsed.version == 1 and parsed.mode == LEGACY
    assert scalable.decode(stream).enhanced is not None


# -- the container ---------------------------------------------------------------------------


def test_version_2_headers_are_canonical(scalable: Codec, images: torch.Tensor) -> None:
    """Version 2 refuses what version 1 let through: non-minimal varints, reordered sections,
    unknown flags."""
    from featcodec.codec.bitstream import Section, Stream, pack

    stream = unpack(scalable.encode(images[0], layers="all"))
    swapped = list(stream.sections)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(BitstreamError, match="out of order"):
        pack(Stream(stream.fingerprint, stream.shapes, tuple(swapped), 2, 0))
    v1 = pack(Stream(stream.fingerprint, stream.shapes, tuple(swapped), 1, 0))
    assert unpack(v1).sections[0].kind == SectionKind.BASE  # version 1: read as before
    forged = _reencode(stream, lambda head: head)
    assert unpack(forged) == stream
    with pytest.raises(BitstreamError, match="not a minimal varint"):
        unpack(_reencode(stream, lambda head: head, pad_count=True))
    data = bytearray(pack(stream))
    data[5] = 0x02
    with pytest.raises(BitstreamError, match="unknown header flags"):
        unpack(_recrc(bytes(data), stream))
    assert Section(SectionKind.BASE, b"").name == "base"


def _header_end(data: bytes, stream) -> int:
    return stream.header_bytes - 4


def _recrc(data: bytes, stream) -> bytes:
    import zlib

    end = _header_end(data, stream)
    return data[:end] + zlib.crc32(data[:end]).to_bytes(4, "little") + data[end + 4 :]


def _reencode(stream, edit: Callable[[bytes], bytes], pad_count: bool = False) -> bytes:
    """The stream's bytes with its section count written as a 2-byte (non-minimal) varint."""
    from featcodec.codec.bitstream import pack, varint

    data = pack(stream)
    if not pad_count:
        return edit(data)
    count = varint(len(stream.sections))
    assert len(count) == 1
    head_end = stream.header_bytes - 4
    # the section count follows the shapes: find it just before the first section record
    first = bytes([stream.sections[0].kind])
    at = data.index(count + first, 14)
    head = data[:at] + bytes([count[0] | 0x80, 0]) + data[at + 1 : head_end]
    import zlib

    return head + zlib.crc32(head).to_bytes(4, "little") + data[head_end + 4 :]


@pytest.mark.cuda
def test_streams_cross_between_cuda_and_cpu(scalable: Codec, images: torch.Tensor) -> None:
    """Item 4 of issue 13 in small: coded on CUDA with TF32 and cuDNN autotuning, decoded on the
    CPU, and the reverse — the entropy-decoded latents agree bit for bit."""
    import copy

    gpu = copy.deepcopy(scalable).cuda()
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    bench = torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    try:
        for x in images:
            for enc, dec in ((gpu, scalable), (scalable, gpu)):
                data = enc.encode(x.to(next(enc.parameters()).device), layers="all")
                mine = enc.decode(data)
                theirs = dec.decode(data)  # raises if the check fails
                torch.testing.assert_close(
                    theirs.features.cpu(), mine.features.cpu(), rtol=1e-3, atol=1e-3
                )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        torch.backends.cudnn.benchmark = bench


def test_fixed_point_sigmoid_is_the_rounded_sigmoid() -> None:
    """The attention block's gate: round-half-up of 2^F·sigmoid, from integer steps computed in
    decimal arithmetic, equal to float64's rounding everywhere it is not within an ulp of a
    half (nowhere in this range)."""
    q = torch.arange(-(80 << exact.FRAC_BITS) // 16, (80 << exact.FRAC_BITS) // 16, 3).double()
    ours = exact.fixed_sigmoid(q)
    theirs = torch.floor(torch.sigmoid(q / (1 << exact.FRAC_BITS)) * (1 << exact.FRAC_BITS) + 0.5)
    assert torch.equal(ours, theirs)
    assert float(exact.fixed_sigmoid(torch.tensor([1e30]))[0]) == 1 << exact.FRAC_BITS


def test_attention_block_in_fixed_point() -> None:
    from compressai.layers import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(16).eval()
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        reference = block(x)
    ours = exact.from_fixed(exact.ExactNetwork(torch.nn.Sequential(block))(exact.to_fixed(x)))
    assert (ours - reference).abs().max() < 2e-3 * (1 + reference.abs().max())
