"""``featcodec eval motion`` (eval/motion.py): the latent-motion experiment of Ulhaq & Bajić."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from featcodec.cli import main
from featcodec.codec.errors import InputError
from featcodec.codec.motion import affine_flow, warp
from featcodec.eval.motion import IDENTITY, PARAMS, affine_theta, infer_stride, measure
from featcodec.eval.motion_setup import load_front, load_image

FAST = ["--backbone", "resnet18", "--threads", "2"]


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def params(**values: float) -> torch.Tensor:
    """One transform (1, 7): the identity with ``values`` set."""
    p = dict(zip(PARAMS, IDENTITY, strict=True))
    p.update(values)
    return torch.tensor([list(p.values())], dtype=torch.float64)


def run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    code = main(["eval", "motion", *FAST, "--out", str(out), *extra])
    return code, out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("featcodec: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_theta_is_the_backward_map_about_the_centre() -> None:
    theta = affine_theta(params(tx=16.0, ty=-8.0), (64, 96))
    assert torch.allclose(theta, torch.tensor([[[1.0, 0, -16], [0, 1, 8]]], dtype=torch.float64))
    # a rotation and a scaling keep the image centre (x, y) = (48, 32) in place
    theta = affine_theta(params(rotation=10.0, sx=1.05, shear_y=3.0), (64, 96))
    centre = torch.tensor([48.0, 32.0, 1.0], dtype=torch.float64)
    assert torch.allclose(theta[0] @ centre, centre[:2])
    # positive rotation turns clockwise on screen: the target's right-hand point comes from
    # above it (y points down) in the reference
    source = theta[0] @ torch.tensor([58.0, 32.0, 1.0], dtype=torch.float64)
    assert source[1] < 32.0


def test_target_image_is_the_warped_reference() -> None:
    image = torch.rand(1, 3, 32, 32)
    theta = affine_theta(params(tx=3.0), (32, 32)).float()
    target, mask = warp(image, affine_flow(theta, (32, 32)))
    assert torch.allclose(target[..., 3:], image[..., :-3], atol=1e-5)
    assert not mask[..., :2].any() and mask[..., 3:].all()


def test_stride_must_be_an_integer() -> None:
    assert infer_stride((224, 224), (28, 28), "layer2.0", 8) == 8
    for image, tensor in (((100, 100), (13, 13)), ((14, 14), (2, 2)), ((64, 72), (8, 8))):
        with pytest.raises(InputError, match="not one integer stride"):
            infer_stride(image, tensor, "layer2.0", 8)


def test_translation_by_a_stride_multiple_is_predicted_exactly() -> None:
    front, _, stride = load_front("resnet18", "layer2.0", None, None, seed=0)
    assert stride == 8
    image, _ = load_image(None, 128, seed=1)
    moves = torch.cat([params(tx=16.0), params(ty=-24.0), params(tx=8.0, ty=8.0)])
    # away from the borders: 4 latent pixels from the uncovered area and the frame
    result = measure(front, image, moves, stride=8, margin=4)
    assert all(f > 0.1 for f in result["valid_fraction"])
    for pred, base in zip(result["prediction"], result["baseline"], strict=True):
        assert pred < 1e-3 and pred < base / 50  # the frame's influence fades: ~1e-4 at most
    # a half-stride move is not exact, but still better than no motion
    half = measure(front, image, params(tx=4.0), stride=8, margin=2)
    assert 1e-3 < half["prediction"][0] < half["baseline"][0]


def test_cli_writes_results_and_figure(tmp_path: Path, capsys) -> None:
    code, out = run(tmp_path, "--image-size", "96", "--draws", "24", "--seed", "3")
    assert code == 0
    report = json.loads((out / "motion.json").read_text())
    settings = report["settings"]
    assert settings["stride"] == 8 and settings["tensor_shape"] == [128, 12, 12]
    assert settings["weights_used"].startswith("none") and "synthetic" in settings["image_source"]
    assert set(report["sweeps"]) == {"translation", "scale", "shear", "rotation"}
    tx = report["sweeps"]["translation"]["curves"]["x"]
    assert len(tx["values"]) == len(tx["prediction"]) == len(tx["baseline"]) == 33
    assert tx["prediction"][tx["values"].index(0.0)] == pytest.approx(0.0, abs=1e-6)
    draws = report["draws"]
    assert len(draws["prediction"]) == len(draws["baseline"]) == len(draws["params"]["tx"]) == 24
    assert all(-32 <= v <= 32 for v in draws["params"]["tx"])
    summary = report["summary"]
    assert summary["count"] == 24
    assert summary["prediction"]["mean"] < summary["baseline"]["mean"]
    assert summary["ratio_mean"] == pytest.approx(
        summary["prediction"]["mean"] / summary["baseline"]["mean"]
    )
    assert math.isclose(summary["prediction"]["mean"], sum(draws["prediction"]) / 24, rel_tol=1e-9)
    with Image.open(out / "motion.png") as im:
        im.verify()
    assert "pred/base" in capsys.readouterr().out
    # an existing result is kept unless --overwrite
    before = (out / "motion.json").read_bytes()
    assert run(tmp_path, "--image-size", "64", "--draws", "2")[0] == 1
    assert "exists (use --overwrite" in one_line_error(capsys)
    assert (out / "motion.json").read_bytes() == before


def test_weights_file_and_image_file(tmp_path: Path, capsys) -> None:
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "r18.pth"
    torch.save(model.state_dict(), weights)
    front, used, _ = load_front("resnet18", "layer2.0", None, str(weights), seed=0)
    assert used == f"file {weights}"
    assert torch.equal(front.get_submodule("conv1").weight, model.conv1.weight)

    picture = tmp_path / "picture.png"
    Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy()).save(picture)
    args = ["--weights-file", str(weights), "--image", str(picture), "--image-size", "64"]
    code, out = run(tmp_path, *args, "--draws", "4")
    assert code == 0
    settings = json.loads((out / "motion.json").read_text())["settings"]
    assert settings["weights_used"] == f"file {weights}"
    assert "50×40 stretched to 64×64" in settings["image_source"]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda p: ["--weights-file", str(p / "r34.pth")], "not a resnet18 state dict"),
        (lambda p: ["--weights-file", str(p / "junk.pth")], "cannot read as a torch state dict"),
        (lambda p: ["--weights-file", str(p / "absent.pth")], "weights file not found"),
        (lambda p: ["--layer", "layer9"], "unknown split point 'layer9'"),
        (lambda p: ["--layer", "layer2.0.conv1"], "is not a cut"),
        (lambda p: ["--image", str(p / "absent.png")], "image file not found"),
        (lambda p: ["--image-size", "100"], "not one integer stride"),
        (lambda p: ["--weights", "NOPE"], "unknown weights 'NOPE'"),
        (lambda p: ["--weights", "DEFAULT", "--weights-file", "x.pth"], "not both"),
        (lambda p: ["--draws", "0"], "--draws must be positive"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, make_args, message: str
) -> None:
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    code, out = run(tmp_path, "--image-size", "64", "--draws", "2", *make_args(tmp_path))
    assert code == 1
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_unavailable_download_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    code, out = run(tmp_path, "--weights", "IMAGENET1K_V1", "--draws", "2")
    assert code == 1
    line = one_line_error(capsys)
    assert "cannot load the IMAGENET1K_V1 weights of resnet18" in line
    assert "--weights-file" in line and not out.exists()


@pytest.mark.cuda
def test_cuda_run(tmp_path: Path) -> None:
    code, out = run(tmp_path, "--device", "cuda", "--image-size", "64", "--draws", "40")
    assert code == 0
    report = json.loads((out / "motion.json").read_text())
    assert report["settings"]["device"] == "cuda" and report["summary"]["count"] == 40
