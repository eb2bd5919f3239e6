"""Equivariance maps (Lenc & Vedaldi): the filter bank, its closed-form fit, the geometry of the
transformations, and ``featcodec eval equivariance``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from torch import nn

from featcodec.cli import main
from featcodec.codec.motion import affine_flow, latent_affine, warp
from featcodec.eval.equivariance import ALL_TRANSFORMATIONS, EquivarianceConfig, make_pair
from featcodec.models.equivariance import (
    DESCRIPTORS,
    TRANSFORMATIONS,
    FilterBank,
    LinearFit,
    invert_theta,
    motion_descriptors,
    transformation_theta,
)


def _permute(t: torch.Tensor, name: str) -> torch.Tensor:
    """What each exact transformation does to a tensor."""
    return {
        "hflip": lambda: t.flip(-1),
        "vflip": lambda: t.flip(-2),
        "rot90": lambda: torch.rot90(t, 1, (-2, -1)),
    }[name]()


@pytest.mark.parametrize("name", ["hflip", "vflip", "rot90"])
@pytest.mark.parametrize("stride", [1, 4, 8])
def test_the_permutation_half_is_exact_for_flips_and_rotations(name: str, stride: int) -> None:
    torch.manual_seed(0)
    h = 6
    tensor = torch.randn(2, 5, h, h)
    theta = transformation_theta(name, (stride * h, stride * h), 2).float()
    flow = affine_flow(latent_affine(theta, stride), (h, h))
    predicted, mask = warp(tensor, flow)
    assert bool(mask.all())
    torch.testing.assert_close(predicted, _permute(tensor, name), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["hflip", "vflip", "rot90"])
def test_image_transformations_match_torch(name: str) -> None:
    image = torch.rand(1, 3, 16, 16)
    theta = transformation_theta(name, (16, 16)).float()
    moved, _ = warp(image, affine_flow(theta, (16, 16)))
    torch.testing.assert_close(moved, _permute(image, name), atol=1e-6, rtol=0)


def test_scale_is_a_zoom_about_the_centre_and_inverses_compose() -> None:
    theta = transformation_theta("scale1.25", (40, 40))[0]
    centre = torch.tensor([20.0, 20.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(theta @ centre, centre[:2])  # the centre stays
    corner = torch.tensor([40.0, 40.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(theta @ corner, torch.tensor([36.0, 36.0], dtype=torch.float64))
    for name in TRANSFORMATIONS:
        t = transformation_theta(name, (40, 40))
        back = invert_theta(t)
        full = lambda m: torch.cat([m[0], torch.tensor([[0.0, 0.0, 1.0]], dtype=m.dtype)])  # noqa: E731
        torch.testing.assert_close(full(t) @ full(back), torch.eye(3, dtype=torch.float64))


def test_unknown_transformations_and_non_square_rotations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown transformation 'shear'"):
        transformation_theta("shear", (8, 8))
    with pytest.raises(ValueError, match="square"):
        transformation_theta("rot90", (8, 16))


class _Gradients(nn.Module):
    """A front that is exactly equivariant to a horizontal flip up to a channel swap: the
    differences to the right and left neighbours (zero padding on both sides)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1, keepdim=True)
        kernel = torch.tensor([[[[0.0, -1.0, 1.0]]], [[[1.0, -1.0, 0.0]]]])
        return F.conv2d(g, kernel, padding=(0, 1))


def test_a_fitted_map_recovers_the_channel_swap_of_an_equivariant_front() -> None:
    torch.manual_seed(0)
    front = _Gradients()
    theta = transformation_theta("hflip", (12, 12), 4).float()
    fit = LinearFit(2, 2, ridge=0.0)
    for _ in range(3):
        pair = make_pair(front, torch.randn(4, 3, 12, 12), theta, 1)
        fit.update(pair.forward, pair.gx, pair.valid)
    bank = FilterBank(2)
    bank.load_fit(*fit.solve())
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(bank.weight[0, :, :, 0, 0], swap, atol=1e-5, rtol=0)
    torch.testing.assert_close(bank.bias[0], torch.zeros(2), atol=1e-5, rtol=0)
    pair = make_pair(front, torch.randn(2, 3, 12, 12), theta[:2], 1)
    torch.testing.assert_close(bank(pair.forward), pair.gx, atol=1e-5, rtol=0)
    assert not torch.allclose(pair.forward, pair.gx, atol=1e-2)  # the warp alone is not it


def test_an_average_pooling_front_is_predicted_exactly_by_the_warp() -> None:
    front = nn.AvgPool2d(4)
    image = torch.randn(3, 3, 32, 32)
    for name in ("hflip", "vflip", "rot90"):
        pair = make_pair(front, image, transformation_theta(name, (32, 32), 3).float(), 4)
        torch.testing.assert_close(pair.forward, pair.gx, atol=1e-5, rtol=0)
        torch.testing.assert_close(pair.inverse, pair.x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_the_closed_form_fit_is_the_least_squares_solution(ridge: float) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 6, 5, 7), torch.randn(2, 3, 5, 7)
    mask = torch.rand(2, 1, 5, 7) > 0.3
    fit = LinearFit(6, 3, ridge=ridge)
    fit.update(x[:1], y[:1], mask[:1])
    fit.update(x[1:], y[1:], mask[1:])
    weight, bias = fit.solve()
    rows = lambda t: t.movedim(1, -1).reshape(-1, t.shape[1])[mask.reshape(-1)].double()  # noqa: E731
    X, Y = rows(x), rows(y)
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    if ridge:  # penalty rows on the weights only, scaled to the inputs' mean energy
        scale = (ridge * (X**2).sum() / 6).sqrt()
        A = torch.cat([A, torch.cat([scale * torch.eye(6), torch.zeros(6, 1)], 1).double()])
        Y = torch.cat([Y, torch.zeros(6, 3, dtype=Y.dtype)])
    expected = torch.linalg.lstsq(A, Y).solution
    torch.testing.assert_close(weight, expected[:6].T.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bias, expected[6].float(), atol=1e-5, rtol=1e-5)


def test_combined_moments_solve_the_regression_of_all_processes() -> None:
    """``combine`` (the DDP sum of the stitch's regression start): two processes' moments
    summed give the fit of all their positions, folds and counts included."""
    torch.manual_seed(0)
    batches = [(torch.randn(3, 4, 5, 5), torch.randn(3, 2, 5, 5)) for _ in range(4)]
    whole, half = LinearFit(4, 2), LinearFit(4, 2)
    for x, y in batches:
        whole.update(x, y)
    for x, y in batches[::2]:  # this process saw every other batch (one per fold); its twin
        half.update(x, y)  # saw the same number of positions
    half.combine(lambda t: 2 * t)
    assert half.counts == [2 * 75, 2 * 75] and half.count == whole.count
    both = LinearFit(4, 2)
    for x, y in [batches[0], batches[2]] * 2:
        both.update(x, y)
    for got, want in zip(half.solve(), both.solve(), strict=True):
        torch.testing.assert_close(got, want)
    assert half.chosen == both.chosen


def test_cross_validation_picks_a_small_ridge_for_clean_data_and_a_large_one_for_noise() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 8)
    clean, noisy = LinearFit(8, 8), LinearFit(8, 8)
    for _ in range(6):
        x = torch.randn(20, 8)
        clean.update(x, x @ w.T)
        noisy.update(torch.randn(20, 8), torch.randn(20, 8))  # nothing to learn
    clean.solve(), noisy.solve()
    assert clean.chosen is not None and noisy.chosen is not None
    assert clean.chosen < noisy.chosen


@pytest.mark.parametrize(("kernel", "descriptors"), [(1, 0), (3, 0), (1, 2), (3, 1)])
def test_a_bank_is_linear_in_its_design_and_starts_as_the_identity(kernel, descriptors) -> None:
    torch.manual_seed(0)
    bank = FilterBank(4, descriptors, kernel)
    x = torch.randn(2, 4, 6, 5)
    d = torch.randn(2, descriptors, 6, 5) if descriptors else None
    torch.testing.assert_close(bank(x, d), x)
    truth = FilterBank(4, descriptors, kernel)
    with torch.no_grad():
        truth.weight.normal_()
        truth.bias.normal_()
    fit = LinearFit(bank.design_features, 4, ridge=0.0)
    for _ in range(2):  # more positions than design features
        x = torch.randn(8, 4, 6, 5)
        d = torch.randn(8, descriptors, 6, 5) if descriptors else None
        fit.update(bank.design(x, d), truth(x, d))
    bank.load_fit(*fit.solve())
    torch.testing.assert_close(bank(x, d), truth(x, d), atol=1e-4, rtol=1e-4)


def test_bank_shapes_are_checked() -> None:
    bank = FilterBank(4, 2)
    with pytest.raises(ValueError, match="descriptors"):
        bank(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        bank(torch.randn(1, 5, 3, 3), torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        bank.load_fit(torch.zeros(4, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="odd"):
        FilterBank(4, kernel_size=2)
    with pytest.raises(ValueError, match="no position"):
        LinearFit(2, 2).solve()


def test_motion_descriptors_of_an_affine_flow() -> None:
    theta = torch.tensor([[[1.1, 0.2, 0.5], [-0.1, 0.9, 0.25]]])
    flow = affine_flow(theta, (6, 7))
    d = motion_descriptors(flow)
    for k, value in enumerate((0.1, 0.2, -0.1, -0.1)):  # the Jacobian A − I
        torch.testing.assert_close(d[0, k], torch.full((6, 7), value), atol=1e-5, rtol=0)
    integer = motion_descriptors(torch.full((1, 2, 4, 4), 3.0))
    assert float(integer.abs().max()) == 0.0  # whole-pixel motion: no blur
    half = motion_descriptors(torch.full((1, 2, 4, 4), 0.5))
    torch.testing.assert_close(half[0, 4], torch.full((4, 4), 0.5))


# --------------------------------------------------------------------------------------------
# featcodec eval equivariance
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    from featcodec.training import TaskModule
    from featcodec.training.datasets import SyntheticScenesDataModule

    torch.manual_seed(0)
    data = SyntheticScenesDataModule(
        image_size=32, train_size=32, val_size=8, test_size=8, batch_size=16, seed=0
    )
    task = TaskModule(lr=3e-3)
    trainer = quiet_trainer(2, limit_val_batches=0)
    trainer.fit(task, data)
    path = tmp_path_factory.mktemp("task") / "task.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def _args(ckpt: str, out: Path, *more: str) -> list[str]:
    return [
        "eval", "equivariance", "--task-checkpoint", ckpt, "--image-size", "32",
        "--train-images", "8", "--test-images", "8", "--batch-size", "4", "--task-steps", "2",
        "--out", str(out), *more,
    ]  # fmt: skip


def test_eval_equivariance_writes_the_report_and_the_figure(task_checkpoint, tmp_path) -> None:
    out = tmp_path / "eq"
    args = _args(task_checkpoint, out, "--layers", "maxpool", "layer1", "--transformations")
    assert main([*args, "hflip"]) == 0
    report = json.loads((out / "equivariance.json").read_text())
    assert (out / "equivariance.png").stat().st_size > 0
    assert list(report["results"]) == ["maxpool", "layer1"]
    r = report["results"]["maxpool"]["hflip"]
    assert r["stride"] == 4 and set(r["nrmse"]) == {"none", "warp", "map1", "map3"}
    assert 0 <= r["task"]["original"] <= 1 and "after_training" in r["task"]
    assert r["nrmse"]["map1"] < r["nrmse"]["none"]  # a trained flip is not the identity
    assert report["metric"] == "accuracy"
    assert set(report["summary"]) >= {"per_layer", "warp_error_grows_with_depth"}
    # a flip's bank is fixed; the random affine's is conditioned on each draw's motion
    assert r["conditioned"] == [] and r["positions_fitted"] > 0
    affine = _args(task_checkpoint, out, "--layers", "maxpool", "--transformations", "affine")
    assert main([*affine, "--kernels", "1", "--overwrite"]) == 0
    result = json.loads((out / "equivariance.json").read_text())["results"]["maxpool"]["affine"]
    assert result["conditioned"] == list(DESCRIPTORS)
    assert math.isfinite(result["nrmse"]["map1"])
    assert main([*affine, "--kernels", "1", "--fixed-affine", "--overwrite"]) == 0
    report = json.loads((out / "equivariance.json").read_text())
    assert report["results"]["maxpool"]["affine"]["conditioned"] == []


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--transformations", "shear"], "unknown transformation 'shear'"),
        (["--layers", "layer9"], "unknown split point 'layer9'"),
        (["--image-size", "36", "--layers", "layer2"], "stride 8, which does not divide"),
        (["--kernels", "2"], "kernel sizes must be odd"),
        (["--image", "photo.jpg"], "not both"),
    ],
)
def test_eval_equivariance_refuses_bad_input_in_one_line(
    task_checkpoint, tmp_path, capsys, more, message
) -> None:
    assert main(_args(task_checkpoint, tmp_path / "eq", *more)) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eq" / "equivariance.json").exists()


def test_the_cli_lists_the_experiment_defaults() -> None:
    from featcodec.cli import equivariance

    assert equivariance.TRANSFORMATIONS == ALL_TRANSFORMATIONS
    from featcodec.eval.equivariance import STAGES

    assert equivariance.LAYERS == STAGES and EquivarianceConfig().layers is None


def test_eval_motion_refines_the_warp_with_a_fitted_bank(tmp_path, capsys) -> None:
    """``eval motion --refine k``: the warp + a motion-conditioned bank fitted in closed form
    on other draws, measured on the same draws as the warp alone."""
    out = tmp_path / "motion"
    base = ["eval", "motion", "--backbone", "resnet18", "--layer", "layer1", "--image-size"]
    args = [*base, "64", "--draws", "16", "--fit-draws", "32", "--out", str(out)]
    assert main([*args, "--refine", "1"]) == 0
    report = json.loads((out / "motion.json").read_text())
    assert len(report["draws"]["refined"]) == 16
    assert report["summary"]["refined"]["mean"] < report["summary"]["prediction"]["mean"]
    assert "1×1 map" in capsys.readouterr().out
    assert main([*args, "--refine", "2", "--overwrite"]) == 1
    assert "--refine must be 0 or an odd kernel size" in capsys.readouterr().err


def test_default_layers_leave_out_those_the_size_does_not_suit(task_checkpoint, tmp_path) -> None:
    out = tmp_path / "eq"
    args = _args(task_checkpoint, out, "--transformations", "vflip", "--kernels", "1")
    assert main([*args[:5], "40", *args[6:], "--task-steps", "0"]) == 0
    report = json.loads((out / "equivariance.json").read_text())
    assert list(report["results"]) == ["maxpool", "layer1", "layer2"]
    assert [s.split()[0] for s in report["settings"]["layers_left_out"]] == ["layer3", "layer4"]
