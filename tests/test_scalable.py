"""Scalable coding: the enhancement layer conditioned on the base, and the layered stream."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from featcodec.codec.bitstream import SectionKind, pack, unpack
from featcodec.codec.enhancement import EnhancementCodec
from featcodec.codec.errors import BitstreamError
from featcodec.codec.facade import Codec, default_arch

ENH = {"N": 16, "M": 16, "downsample": 3, "hyper_downsample": 1}


def scalable(seed: int = 0, **enh: object) -> Codec:
    torch.manual_seed(seed)
    return Codec.build(default_arch(codec=dict(TINY), enhancement={**ENH, **enh})).eval()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return scalable()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 40, 56)


def test_enhancement_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    enh = EnhancementCodec(base_channels=16, base_stride=16, **ENH).eval()
    x, y_b = torch.rand(2, 3, 40, 56), torch.randn(2, 16, 3, 4)
    code = enh.compress(x, y_b)
    out = enh.decompress(code.y, code.z, y_b, (40, 56))
    assert out.shape == (2, 3, 40, 56)
    again = enh.decompress(code.y, code.z, y_b, (40, 56))
    assert torch.equal(out, again)
    # the base is side information: decoding with another base latent stops — the entropy
    # parameters differ, so the strings fail their check (or do not even end where they should)
    with pytest.raises(BitstreamError, match="fails its check|does not end where|malformed rANS"):
        enh.decompress(code.y, code.z, y_b + 1, (40, 56))


def test_entropy_parameters_depend_on_the_base_unless_standalone() -> None:
    x, y_b = torch.rand(1, 3, 32, 32), torch.randn(1, 16, 2, 2)
    for standalone in (False, True):
        torch.manual_seed(0)
        enh = EnhancementCodec(16, 16, standalone=standalone, **ENH).eval()
        a, b = enh(x, y_b), enh(x, y_b * 2 + 1)
        changed = not torch.equal(a.scales, b.scales) or not torch.equal(a.means, b.means)
        assert changed is not standalone


def test_base_only_decode_of_a_cut_stream_equals_the_base_of_a_full_decode(codec, image):
    data = codec.encode(image)
    full = unpack(data)
    assert [s.kind for s in full.sections] == [
        SectionKind.HYPER,
        SectionKind.BASE,
        SectionKind.HYPER_ENH,
        SectionKind.ENH,
    ]
    layers = full.layer_bytes()
    cut = data[: layers["header"] + layers["base"]]
    base = codec.decode(cut, layers="base")
    whole = codec.decode(data)
    assert base.stream.cut and base.enhanced is None
    assert torch.equal(base.features, whole.features)
    assert torch.equal(base.output, whole.output)
    assert whole.enhanced is not None and whole.enhanced.shape == (1, 3, 40, 56)
    # the cut stream is exactly what a base-only encode would have needed in its sections
    assert codec.decode(data, layers="base").enhanced is None


def test_layers_all_on_base_only_streams_is_refused(codec, image):
    data = codec.encode(image)
    layers = unpack(data).layer_bytes()
    cut = data[: layers["header"] + layers["base"]]
    with pytest.raises(BitstreamError, match="only its base layer"):
        codec.decode(cut)
    base_only = codec.encode(image, layers="base")
    with pytest.raises(BitstreamError, match="has no enhancement layer"):
        codec.decode(base_only)
    assert codec.decode(base_only, layers="base").enhanced is None
    with pytest.raises(BitstreamError, match="truncated"):  # cut anywhere else
        codec.decode(data[:-3], layers="base")


def test_base_and_enhancement_from_different_models_are_refused(codec, image):
    other_enh = scalable(seed=0, standalone=True)  # another enhancement; base copied below
    other_enh.load_state_dict(
        {
            **codec.state_dict(),
            **{k: v for k, v in other_enh.state_dict().items() if k.startswith("enhancement.")},
        }
    )
    assert other_enh.fingerprint == codec.fingerprint  # same base
    assert other_enh.enhancement_fingerprint != codec.enhancement_fingerprint
    with pytest.raises(BitstreamError, match="enhancement layer was written by model"):
        other_enh.decode(codec.encode(image))
    assert torch.equal(
        other_enh.decode(codec.encode(image), layers="base").features,
        codec.decode(codec.encode(image)).features,
    )
    # a base-only checkpoint decodes the base of scalable streams, and refuses the rest
    base_only = Codec.build(default_arch(codec=dict(TINY))).eval()
    base_only.load_state_dict(
        {k: v for k, v in codec.state_dict().items() if not k.startswith("enhancement.")}
    )
    assert base_only.fingerprint == codec.fingerprint
    base_only.decode(codec.encode(image), layers="base")
    with pytest.raises(BitstreamError, match="no enhancement layer"):
        base_only.decode(codec.encode(image))


def test_enhancement_without_its_base_is_refused(codec, image):
    full = unpack(codec.encode(image))
    orphan = type(full)(full.fingerprint, full.shapes, full.sections[2:])
    with pytest.raises(BitstreamError, match="without its base"):
        codec.decode(unpack(pack(orphan)))
    swapped = type(full)(full.fingerprint, full.shapes, full.sections[2:] + full.sections[:2])
    with pytest.raises(BitstreamError, match="base section follows an enhancement"):
        pack(swapped)


def test_cli_layers(codec, image, tmp_path, capsys) -> None:
    from PIL import Image

    from featcodec.cli import main
    from featcodec.inputs import to_png

    ckpt = tmp_path / "scalable.ckpt"
    codec.save(ckpt)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(to_png(image))
    streams = tmp_path / "streams"
    assert main(["encode", str(tmp_path / "in"), "-c", str(ckpt), "-o", str(streams)]) == 0
    assert main(["info", str(streams / "a.fcb")]) == 0
    text = capsys.readouterr().out
    assert "base layer" in text and "enhancement" in text
    data = (streams / "a.fcb").read_bytes()
    layers = unpack(data).layer_bytes()
    cut = tmp_path / "cut" / "a.fcb"
    cut.parent.mkdir()
    cut.write_bytes(data[: layers["header"] + layers["base"]])
    out = tmp_path / "out"
    args = ["decode", str(cut), "-c", str(ckpt), "-o", str(out)]
    assert main(args) == 1
    assert "only its base layer" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--layers", "base"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.pt", "predictions.json"]
    full = tmp_path / "full"
    assert main(["decode", str(streams), "-c", str(ckpt), "-o", str(full)]) == 0
    with Image.open(full / "a.enhanced.png") as im:
        assert im.size == (56, 40)
    assert torch.equal(torch.load(full / "a.pt"), torch.load(out / "a.pt"))
    assert main(["decode", str(streams), "-c", str(ckpt), "-o", str(full), "--preview"]) == 1
    assert "no preview synthesis" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "lmbda", "channels"), [("reconstruction", 0.01, 3), ("segmentation", 20.0, 6)]
)
def test_enhancement_training_lowers_the_loss_and_keeps_the_base(
    codec, tmp_path, target, lmbda, channels
) -> None:
    from conftest import quiet_trainer

    from featcodec.training import EnhancementModule
    from featcodec.training.datasets import (
        SyntheticScenes,
        SyntheticScenesDataModule,
        collate_scenes,
    )

    base = Codec.build(default_arch(codec=dict(TINY))).eval()
    base_ckpt = tmp_path / "base.ckpt"
    base.save(base_ckpt)
    torch.manual_seed(0)
    module = EnhancementModule(str(base_ckpt), lr=3e-3, target=target, lmbda=lmbda, **ENH)
    ds = SyntheticScenes("train", size=16, image_size=32, seed=0)
    batch = collate_scenes([ds[i] for i in range(16)])
    x = batch["image"]
    module.eval()
    with torch.no_grad():
        before = float(module.compute_loss(batch)[0]["loss"])
    data = SyntheticScenesDataModule(image_size=32, train_size=16, val_size=8, batch_size=8)
    trainer = quiet_trainer(epochs=8)
    trainer.fit(module, data)
    module.eval()
    with torch.no_grad():
        assert float(module.compute_loss(batch)[0]["loss"]) < before
    assert module.codec.fingerprint == base.fingerprint  # the base never moved
    path = tmp_path / "scalable.ckpt"
    trainer.save_checkpoint(path)
    loaded = Codec.from_checkpoint(path)
    assert loaded.enhancement is not None
    assert loaded.enhancement_fingerprint == module.codec.enhancement_fingerprint
    stream = loaded.encode(x[0])
    torch.testing.assert_close(
        loaded.decode(stream, layers="base").features, base.decode(base.encode(x[0])).features
    )
    assert loaded.decode(stream).enhanced.shape == (1, channels, 32, 32)
    assert loaded.enhancement.target == target


def test_layer_measurement_counts_real_bytes(codec) -> None:
    from featcodec.eval.data import synthetic_eval_set
    from featcodec.eval.scalable import evaluate_layers

    data = synthetic_eval_set("test", 2, 32)
    row = evaluate_layers(codec, data, "enh", "p")
    streams = [unpack(codec.encode(data.dataset[i]["image"])) for i in range(len(data))]
    enh = sum(s.layer_bytes()["enhancement"] for s in streams)
    assert row["bpp_enhancement"] == pytest.approx(8 * enh / (2 * 32 * 32))
    whole = sum(s.total_bytes for s in streams)
    assert row["bpp_base"] + row["bpp_enhancement"] == pytest.approx(8 * whole / (2 * 32 * 32))
    assert row["psnr"] > 0
