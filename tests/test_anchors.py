"""Classical anchors (eval.anchors): tiling, min–max quantization, every codec's round trip,
rate ordering, standalone per-tensor bytes, and clean errors on bad bytes."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from featcodec.codec.errors import FeatcodecError, InputError
from featcodec.eval.anchors import (
    ANCHORS,
    HEADER,
    PARAMETER_SETS,
    Anchor,
    X265Anchor,
    access_units,
    build_anchor,
    code_batch,
    dequantize,
    quantize,
    tile,
    untile,
)

HAS_X265 = X265Anchor.available(12) is None
needs_x265 = pytest.mark.skipif(
    not HAS_X265, reason=f"x265 anchor unavailable: {X265Anchor.available(12)}"
)
PILLOW = {"jpeg", "jpeg2000", "avif"}


def relu_features(B: int, C: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Post-ReLU-like features (B, C, h, w): smoothed noise, shifted, rectified."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, h + 4, w + 4, generator=g)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :] / 256).expand(C, 1, 5, 5)
    return F.relu(F.conv2d(x, k, groups=C) * 4 - 0.2)


def anchor_or_skip(name: str) -> Anchor:
    anchor = build_anchor(name)
    reason = anchor.available()
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    return anchor


@pytest.fixture(scope="module")
def feats() -> torch.Tensor:
    return relu_features(2, 64, 8, 8)


@pytest.mark.parametrize("C", [1, 3, 64, 130])
@pytest.mark.parametrize("hw", [(1, 1), (6, 6), (5, 9), (8, 3)])
def test_tile_untile_round_trip(C: int, hw: tuple[int, int]) -> None:
    h, w = hw
    f = torch.randn(2, C, h, w)
    mosaic = tile(f)
    cols = next(c for c in range(1, C + 2) if c * c >= C)
    rows = -(-C // cols)
    assert mosaic.shape == (2, rows * h, cols * w)
    assert torch.equal(untile(mosaic, C, h, w), f)
    if rows * cols > C:  # empty cells hold each tensor's minimum
        assert torch.equal(mosaic[:, -1, -1], f.reshape(2, -1).amin(dim=1))
    assert torch.equal(mosaic[:, :h, :w], f[:, 0])


def test_untile_rejects_wrong_mosaic() -> None:
    with pytest.raises(InputError):
        untile(torch.zeros(1, 7, 7), 4, 3, 3)


@pytest.mark.parametrize("bits", [1, 2, 8, 12, 16])
def test_quantization_error_within_half_a_step(bits: int) -> None:
    f = torch.randn(3, 5, 4, 4) * torch.tensor([1.0, 10.0, 1e-3])[:, None, None, None]
    q, lo, hi = quantize(f, bits)
    assert q.dtype == torch.int64 and int(q.min()) == 0 and int(q.max()) == (1 << bits) - 1
    g = dequantize(q, lo, hi, bits)
    step = (hi - lo) / ((1 << bits) - 1)
    err = (g - f).abs().reshape(3, -1).amax(dim=1)
    assert torch.all(err <= step / 2 * (1 + 1e-4) + 1e-6 * f.abs().amax())
    assert g.dtype == torch.float32


def test_quantization_of_a_constant_tensor() -> None:
    f = torch.full((2, 3, 4, 4), 2.5)
    q, lo, hi = quantize(f, 8)
    assert torch.all(q == 0)
    assert torch.equal(dequantize(q, lo, hi, 8), f)


def test_constant_and_zero_tensors_survive_every_anchor() -> None:
    f = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), -1.5)])
    for name in ANCHORS:
        anchor = build_anchor(name)
        if anchor.available() is None:
            _, g = code_batch(anchor, f, anchor.settings[0])
            assert torch.allclose(g, f), name


# Relative L2 error at the highest-rate setting: 8-bit anchors are limited by their
# quantizer (≈0.5%), JPEG by its quantization tables even at quality 95.
HIGHEST_RATE_ERROR = {
    "x265-12bit": 0.01,
    "x265-10bit": 0.01,
    "jpeg": 0.08,
    "jpeg2000": 0.02,
    "avif": 0.05,
    "zstd": 0.01,
    "zlib": 0.01,
}


@pytest.mark.parametrize("name", list(ANCHORS))
def test_round_trip_at_highest_rate(name: str, feats: torch.Tensor) -> None:
    anchor = anchor_or_skip(name)
    streams, g = code_batch(anchor, feats, anchor.settings[0])
    assert len(streams) == feats.shape[0] and all(isinstance(s, bytes) for s in streams)
    assert g.shape == feats.shape and g.dtype == torch.float32
    rel = float((g - feats).norm() / feats.norm())
    assert rel < HIGHEST_RATE_ERROR[name], rel
    assert all(s[0] == anchor.tag and len(s) > HEADER.size for s in streams)


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000", "avif", "zstd", "zlib"])
def test_bytes_shrink_and_error_grows_as_quality_falls(name: str, feats: torch.Tensor) -> None:
    anchor = anchor_or_skip(name)
    sizes, errors = [], []
    for s in anchor.settings[:5]:
        streams, g = code_batch(anchor, feats, s)
        sizes.append(sum(map(len, streams)))
        errors.append(float((g - feats).norm()))
    assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    assert errors[0] < errors[-1]


@needs_x265
def test_x265_bytes_grow_as_qp_falls(feats: torch.Tensor) -> None:
    anchor = X265Anchor(12)
    sizes = [sum(map(len, anchor.encode(feats, qp))) for qp in (40, 30, 20, 10, 0)]
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False)), sizes


@needs_x265
def test_x265_batch_bytes_equal_bytes_coded_alone() -> None:
    # 20 tensors fill more than 31 input frames, where x265's per-frame pattern wraps around
    anchor = X265Anchor(12)
    x = relu_features(20, 16, 4, 4, seed=3)
    batch = anchor.encode(x, 24)
    for i in (0, 2, 17, 19):
        assert batch[i] == anchor.encode(x[i : i + 1], 24)[0], i
    whole = anchor.decode(batch)
    for i in (2, 19):  # each tensor's bytes decode on their own, to the same tensor
        assert torch.equal(anchor.decode([batch[i]])[0], whole[i])
    assert float((whole - x).norm() / x.norm()) < 0.2
    units = access_units(batch[5][HEADER.size :])
    assert len(units) == 1 and PARAMETER_SETS <= units[0][1] and units[0][1] & {19, 20}


@needs_x265
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 5), (2, 16, 16)])
def test_x265_small_and_odd_mosaics(shape: tuple[int, int, int]) -> None:
    anchor = X265Anchor(10)
    f = torch.rand(2, *shape)
    _, g = code_batch(anchor, f, 0)
    assert g.shape == f.shape and float((g - f).abs().max()) < 0.02


@pytest.mark.parametrize("name", list(ANCHORS))
def test_bad_bytes_raise_input_error(name: str, feats: torch.Tensor) -> None:
    anchor = anchor_or_skip(name)
    good = anchor.encode(feats[:1], anchor.settings[len(anchor.settings) // 2])[0]
    bad = [
        b"",
        good[:10],
        good[: HEADER.size],
        good[:-1],
        good[: len(good) // 2],
        good + b"\x00",
        good[:20] + bytes([good[20] ^ 0xFF]) + good[21:],
        bytes(range(256)) * 4,
        b"\x00" * 200,
        build_anchor("zlib" if name != "zlib" else "zstd").encode(feats[:1], 8)[0],
    ]
    for stream in bad:
        with pytest.raises(InputError):
            anchor.decode([stream])
    with pytest.raises(InputError):
        anchor.decode([])
    with pytest.raises(InputError):  # streams of different shapes in one call
        anchor.decode([good, anchor.encode(feats[:1, :3], anchor.settings[0])[0]])


@pytest.mark.parametrize("name", list(ANCHORS))
def test_bad_inputs_raise_input_error(name: str) -> None:
    anchor = build_anchor(name)
    good = torch.rand(1, 2, 3, 3)
    for features, setting in [
        (torch.rand(2, 3, 3), anchor.settings[0]),
        (torch.randint(0, 5, (1, 2, 3, 3)), anchor.settings[0]),
        (torch.tensor(float("nan")).expand(1, 2, 3, 3), anchor.settings[0]),
        (good, -1),
        (good, "high"),
        (good, 1e9),
    ]:
        with pytest.raises(InputError):
            anchor.encode(features, setting)


def test_settings_and_config() -> None:
    for name in ANCHORS:
        anchor = build_anchor(name)
        assert anchor.name == name and len(anchor.settings) >= 4
        assert isinstance(anchor.setting_name, str)
        cfg = anchor.config()
        assert cfg["name"] == name and cfg["settings"] == list(anchor.settings)
        assert cfg["header_bytes"] == HEADER.size
    # ordered from the highest rate to the lowest
    assert list(build_anchor("x265-12bit").settings) == sorted(build_anchor("x265-12bit").settings)
    for name in ("jpeg", "avif", "zstd", "zlib"):
        s = list(build_anchor(name).settings)
        assert s == sorted(s, reverse=True)


def test_build_anchor_unknown_name() -> None:
    with pytest.raises(InputError, match="known: .*x265-12bit.*jpeg.*zstd"):
        build_anchor("nope")
    assert issubclass(InputError, FeatcodecError)


def test_x265_unavailable_without_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    for bits in (10, 12):
        reason = X265Anchor(bits).available()
        assert isinstance(reason, str) and "ffmpeg" in reason
    with pytest.raises(InputError, match="ffmpeg not found"):
        X265Anchor(12).encode(torch.rand(1, 2, 3, 3), 20)


def test_pillow_and_lossless_anchors_need_no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    anchor = build_anchor("zlib")
    assert anchor.available() is None
    f = relu_features(1, 4, 4, 4)
    assert code_batch(anchor, f, 8)[1].shape == f.shape
