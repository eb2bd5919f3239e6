"""Reconstruction reward (codec/preview.py): g_r on the base latent, the β term, the preview."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY

from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.preview import PreviewSynthesis, reconstruction_distortion
from featcodec.eval.data import synthetic_eval_set
from featcodec.eval.rd import evaluate_codec
from featcodec.training import BaseCodecModule
from featcodec.training.datasets import SyntheticScenes, collate_scenes


@pytest.mark.parametrize("stride", [1, 2, 8, 16])
def test_preview_maps_the_latent_to_the_input_size(stride: int) -> None:
    g_r = PreviewSynthesis(M=8, stride=stride)
    out = g_r(torch.randn(2, 8, 5, 3), size=(5 * stride - 1, 3 * stride))
    assert out.shape == (2, 3, 5 * stride - 1, 3 * stride)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="power of two"):
        PreviewSynthesis(M=8, stride=6)


def test_reconstruction_distortion_is_mse_on_the_255_scale() -> None:
    x = torch.zeros(1, 3, 4, 4)
    assert float(reconstruction_distortion(x + 1 / 255, x)) == pytest.approx(1.0)


def preview_codec() -> Codec:
    torch.manual_seed(0)
    return Codec.build(default_arch(codec={**TINY, "preview": True})).eval()


def test_decoder_outputs_the_preview_of_the_decoded_latent() -> None:
    codec = preview_codec()
    x = torch.rand(3, 40, 56)
    decoded = codec.decode(codec.encode(x))
    assert decoded.preview is not None and decoded.preview.shape == (1, 3, 40, 56)
    y_hat = codec.base.compress(codec.features(x[None])).y_hat
    torch.testing.assert_close(decoded.preview, codec.base.g_r(y_hat, (40, 56)))
    plain = Codec.build(default_arch(codec=dict(TINY))).eval()
    assert plain.decode(plain.encode(x)).preview is None


def test_eval_reports_the_preview_psnr() -> None:
    row = evaluate_codec(preview_codec(), synthetic_eval_set("test", 2, 32), "c", "p")
    assert row.psnr is not None and math.isfinite(row.psnr) and "psnr" in row.metrics


@pytest.fixture(scope="module")
def batch() -> dict:
    ds = SyntheticScenes("train", size=8, image_size=32, seed=0)
    return collate_scenes([ds[i] for i in range(8)])


def _module(beta: float) -> BaseCodecModule:
    torch.manual_seed(0)
    args = dict(N=16, M=16, attention=False, lmbda=1.0, preview=True, beta=beta)
    return BaseCodecModule(**args)


def _grad_norm(params) -> float:
    return sum(float(p.grad.norm()) for p in params if p.grad is not None)


@pytest.mark.filterwarnings("ignore:training a codec in front of an untrained")
def test_beta_shapes_the_representation_only_when_positive(batch) -> None:
    for beta, shapes in ((0.01, True), (0.0, False)):
        module = _module(beta)
        rd, _ = module.compute_loss(batch)
        assert rd.reconstruction is not None
        base = module.codec.base
        base.zero_grad()
        # the reconstruction term alone: how it reaches g_r and the analysis g_a
        out = module.codec(batch["image"])
        recon = reconstruction_distortion(out.preview, batch["image"])
        recon.backward()
        assert _grad_norm(base.g_r.parameters()) > 0
        assert (_grad_norm(base.g_a.parameters()) > 0) is shapes
    with pytest.raises(ValueError, match="needs preview"):
        BaseCodecModule(N=16, M=16, attention=False, beta=0.01)


@pytest.mark.filterwarnings("ignore:training a codec in front of an untrained")
def test_preview_improves_in_a_short_run(batch) -> None:
    module = _module(0.01)
    opt = torch.optim.Adam(module.codec.base.parameters(), lr=3e-3)

    def recon() -> float:
        with torch.no_grad():
            return float(module.compute_loss(batch)[0].reconstruction)

    before = recon()
    module.codec.train()
    for _ in range(60):
        rd, _ = module.compute_loss(batch)
        opt.zero_grad()
        rd.loss.backward()
        opt.step()
    module.codec.eval()
    assert recon() < 0.8 * before
