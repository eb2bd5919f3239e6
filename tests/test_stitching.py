"""Stitching layers (Lenc & Vedaldi's "Franken-network"): models/stitching.py,
training/stitch_module.py, ``featcodec decode --stitch``, ``featcodec experiment stitching``.

The networks are tiny (``fixture_tinynet``); the one stitched to itself is *self-labelled*:
its classifier is the nearest of five k-means centres of its own pooled features, with wide
margins, and the labels are its own predictions, so its own accuracy is 1 by construction
and a stitched network's accuracy says how far ``E`` is from serving B as B's own front does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, quiet_trainer, register_fixture_backbone
from PIL import Image
from torch.utils.data import DataLoader

from featcodec.cli import main
from featcodec.codec.checkpoint import seal
from featcodec.codec.errors import CheckpointError, InputError
from featcodec.codec.facade import Codec, default_arch
from featcodec.models.stitching import Stitch, fit_regression
from featcodec.training import StitchModule, TaskModule, load_stitch
from featcodec.training.datasets import SyntheticScenes, collate_scenes
from featcodec.training.stitch_module import STITCH_KIND, read_task_network

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
N_IMAGES = 128


def save_task(module: TaskModule, path: Path) -> str:
    """A task checkpoint as TaskModule writes it (without a trainer)."""
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    scenes = SyntheticScenes("train", N_IMAGES, 32, 0)
    return collate_scenes([scenes[i] for i in range(N_IMAGES)])["image"]


@pytest.fixture(scope="module")
def networks(images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Task checkpoints: ``self`` (self-labelled, with its labels) and ``other`` (random)."""
    name = register_fixture_backbone()
    folder = tmp_path_factory.mktemp("networks")
    torch.manual_seed(0)
    task = TaskModule(backbone=name).eval()
    with torch.no_grad():
        front = task.task.split(task.net, "layer2").front
        h = front(task.normalize(images)).mean((2, 3))  # (N, 16) pooled features
        centres = h[torch.randperm(N_IMAGES, generator=torch.Generator().manual_seed(0))[:5]]
        for _ in range(20):
            nearest = torch.cdist(h, centres).argmin(1)
            centres = torch.stack(
                [h[nearest == k].mean(0) if (nearest == k).any() else centres[k] for k in range(5)]
            )
        scale = 300.0  # -‖h − c‖² up to a constant, with wide margins
        task.net.fc.weight.copy_(2 * scale * centres)
        task.net.fc.bias.copy_(-scale * (centres * centres).sum(1))
        labels = task(images).argmax(1)
    assert len(labels.unique()) >= 3  # a classifier, not a constant
    torch.manual_seed(1)
    other = TaskModule(backbone=name)
    return {
        "self": save_task(task, folder / "self.ckpt"),
        "other": save_task(other, folder / "other.ckpt"),
        "labels": labels,
    }


def loader(images: torch.Tensor, labels: torch.Tensor, shuffle: bool = True) -> DataLoader:
    items = [{"image": images[i], "label": labels[i]} for i in range(len(images))]
    gen = torch.Generator().manual_seed(0)
    return DataLoader(
        items, batch_size=32, shuffle=shuffle, collate_fn=collate_scenes, generator=gen
    )


def accuracy(module: StitchModule, images: torch.Tensor, labels: torch.Tensor) -> float:
    module.eval()
    predicted = module.prediction({"image": images}).argmax(1)
    return float((predicted == labels).float().mean())


def test_a_network_stitched_to_itself_starts_at_and_keeps_its_own_accuracy(
    networks: dict, images: torch.Tensor
) -> None:
    labels = networks["labels"]
    path = networks["self"]
    module = StitchModule(path, network_a=path, split_at="layer1", init="identity", lr=3e-3)
    own = module.prediction({"image": images}, own=True).argmax(1)
    assert torch.equal(own, labels)  # own accuracy 1 by construction
    assert accuracy(module, images, labels) == 1.0  # the identity is B's own front
    torch.manual_seed(0)
    quiet_trainer(steps=40).fit(module, loader(images, labels))
    assert accuracy(module, images, labels) >= 0.95


def test_training_brings_a_perturbed_stitch_back_to_the_networks_accuracy(
    networks: dict, images: torch.Tensor
) -> None:
    labels = networks["labels"]
    path = networks["self"]
    module = StitchModule(path, network_a=path, split_at="layer2", init="identity", lr=1e-2)
    torch.manual_seed(1)
    with torch.no_grad():
        module.stitch.weight.add_(0.5 * torch.randn_like(module.stitch.weight) / 4)
    before = accuracy(module, images, labels)
    assert before < 0.9
    quiet_trainer(steps=40).fit(module, loader(images, labels))
    after = accuracy(module, images, labels)
    assert after >= 0.95 and after > before + 0.05


def _least_squares(fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinary least squares ``fb ≈ W·fa + b`` over every position, in float64."""
    x = fa.double().movedim(1, -1).reshape(-1, fa.shape[1])
    y = fb.double().movedim(1, -1).reshape(-1, fb.shape[1])
    design = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    solution = torch.linalg.lstsq(design, y).solution
    return solution[:-1].T.float(), solution[-1].float()


def test_the_regression_start_is_the_least_squares_solution(
    networks: dict, images: torch.Tensor
) -> None:
    labels = networks["labels"]
    # A and B differ: E maps one random network's layer1 (12 channels) onto the other's
    module = StitchModule(
        networks["self"], network_a=networks["other"], split_at="layer1", ridge=0.0, lr=0.0
    )
    assert (module.stitch.in_channels, module.stitch.out_channels) == (12, 12)
    fa, fb = module.features_a(images), module.features_b(images)
    weight, bias = _least_squares(fa, fb)
    # through the trainer: on_train_start fits E on the loader's batches (all 4 of them)
    quiet_trainer(steps=1).fit(module, loader(images, labels))
    torch.testing.assert_close(module.stitch.weight[..., 0, 0], weight, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(module.stitch.bias, bias, rtol=1e-3, atol=1e-4)
    # stitched to itself, the regression is the identity, and B's predictions are its own
    same = StitchModule(networks["self"], network_a=networks["self"], split_at="layer2", ridge=0)
    same.fit_regression(loader(images, labels))
    torch.testing.assert_close(same.stitch.weight[..., 0, 0], torch.eye(16), atol=1e-3, rtol=0)
    assert accuracy(same, images, labels) == 1.0


def test_fit_regression_refuses_tensors_of_another_stride() -> None:
    stitch = Stitch(4, 3)
    with pytest.raises(ValueError, match="same stride"):
        fit_regression(stitch, [(torch.rand(2, 4, 6, 6), torch.rand(2, 3, 3, 3))])
    stitch.reset_identity()
    assert (
        torch.equal(stitch.weight[:3, :3, 0, 0], torch.eye(3)) and stitch.weight[:, 3].eq(0).all()
    )


def test_a_stitch_checkpoint_round_trips_and_resumes(
    networks: dict, images: torch.Tensor, tmp_path: Path
) -> None:
    labels = networks["labels"]
    module = StitchModule(networks["self"], network_a=networks["other"], split_at="layer2")
    trainer = quiet_trainer(steps=3)
    trainer.fit(module, loader(images, labels))
    path = tmp_path / "stitch.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["featcodec"]["kind"] == STITCH_KIND
    assert not any(k.startswith("net_a.") for k in saved["state_dict"])  # A is not stored
    stitched = load_stitch(path)
    entry = stitched.entry
    assert (entry["split_at"], entry["in_channels"], entry["out_channels"]) == ("layer2", 16, 16)
    assert entry["a"]["source"] == "task" and entry["b"]["arch"]["backbone"] == "fixture_tinynet"
    torch.testing.assert_close(stitched.stitch.weight, module.stitch.weight.detach())
    module.eval()
    f = module.features_a(images[:8])
    torch.testing.assert_close(stitched(f), module.split_b.back(module.stitch(f)))
    # resuming: A's weights come from A's checkpoint again, E goes on from where it was
    resumed = StitchModule(networks["self"], network_a=networks["other"], split_at="layer2")
    quiet_trainer(steps=8).fit(resumed, loader(images, labels), ckpt_path=path)
    assert resumed.global_step == 8
    assert not torch.equal(resumed.stitch.weight, module.stitch.weight)
    another_a = StitchModule(networks["self"], network_a=networks["self"], split_at="layer2")
    with pytest.raises(CheckpointError, match="another network A"):
        quiet_trainer(steps=8).fit(another_a, loader(images, labels), ckpt_path=path)
    # the module's own writer gives the same entry
    module.save(tmp_path / "saved.ckpt")
    assert load_stitch(tmp_path / "saved.ckpt").entry == entry


def test_configs_stitch_yaml_trains_a_stitch_checkpoint(networks: dict, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "stitch.yaml"
    argv = ["train", "--config", config, "--model.network_a", networks["other"]]
    argv += ["--model.network_b", networks["self"], "--model.fit_batches", "1"]
    argv += ["--data.image_size", "32", "--data.train_size", "64", "--data.val_size", "32"]
    argv += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    argv += ["--trainer.logger.init_args.save_dir", tmp_path / "logs"]
    argv += ["--trainer.callbacks.init_args.dirpath", tmp_path / "ckpt"]
    assert main([str(a) for a in argv]) == 0
    stitched = load_stitch(tmp_path / "ckpt" / "last.ckpt")
    assert stitched.entry["split_at"] == "layer2" and stitched.entry["a"]["source"] == "task"
    assert not torch.equal(stitched.stitch.weight[..., 0, 0], torch.eye(16))  # fitted, trained


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def stitch_file(networks: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stitch") / "stitch.ckpt"
    StitchModule(networks["self"], network_a=networks["other"], split_at="layer2").save(path)
    return path


def _rewrite(src: Path, dst: Path, change, reseal: bool = True) -> Path:
    ckpt = torch.load(src, weights_only=True)
    change(ckpt)
    if reseal:
        seal(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_a_malformed_stitch_checkpoint_gets_one_line(
    stitch_file: Path, networks: dict, tmp_path: Path
) -> None:
    cases = {
        "task checkpoint": (Path(networks["self"]), "not a stitch checkpoint"),
        "wrong kind": (
            _rewrite(
                stitch_file, tmp_path / "kind.ckpt", lambda c: c["featcodec"].update(kind="codec")
            ),
            "not a stitch checkpoint",
        ),
        "tampered weights": (
            _rewrite(
                stitch_file,
                tmp_path / "tampered.ckpt",
                lambda c: c["state_dict"]["stitch.weight"].add_(0.01),
                reseal=False,
            ),
            "digest",
        ),
        "bad shape": (
            _rewrite(
                stitch_file,
                tmp_path / "shape.ckpt",
                lambda c: c["state_dict"].update({"stitch.weight": torch.zeros(16, 15, 1, 1)}),
            ),
            "stitch.weight is (16, 15, 1, 1), the entry says (16, 16, 1, 1)",
        ),
        "absurd size": (
            _rewrite(
                stitch_file,
                tmp_path / "huge.ckpt",
                lambda c: c["featcodec"]["arch"].update(in_channels=1 << 40),
            ),
            "in_channels",
        ),
        "B's weights altered with the digest resealed": (
            _rewrite(
                stitch_file,
                tmp_path / "b.ckpt",
                lambda c: c["state_dict"]["net_b.fc.bias"].add_(1.0),
            ),
            "B's recorded fingerprint",
        ),
        "B's channels": (
            _rewrite(
                stitch_file,
                tmp_path / "split.ckpt",
                lambda c: c["featcodec"]["arch"].update(split_at="layer1"),
            ),
            "B has 12 channels at 'layer1', E gives 16",
        ),
    }
    for name, (path, message) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_stitch(path)
        assert message in _one_line(info.value), name


def test_unknown_split_points_and_bad_arguments_get_one_line(networks: dict, capsys) -> None:
    with pytest.raises(InputError, match="unknown split point 'layer9'") as info:
        StitchModule(networks["self"], network_a=networks["other"], split_at="layer9")
    _one_line(info.value)
    with pytest.raises(InputError, match="network_a"):
        StitchModule(networks["self"])
    with pytest.raises(InputError, match="unknown init"):
        StitchModule(networks["self"], network_a=networks["other"], init="random")
    capsys.readouterr()
    argv = ["experiment", "stitching", "--network-a", networks["other"]]
    argv += ["--network-b", networks["self"], "--splits", "layer2,layer9"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown split point 'layer9'" in err, err


def test_experiment_stitching_reports_every_split(networks: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "exp"
    argv = ["experiment", "stitching", "--network-a", networks["self"], "--network-b"]
    argv += [networks["self"], "--splits", "layer1,layer2", "--steps", "2", "--fit-batches", "1"]
    argv += ["--train-size", "32", "--test-size", "16", "--image-size", "32", "--out", out]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    assert "B own accuracy" in capsys.readouterr().out  # the table
    results = json.loads((out / "stitching.json").read_text())
    assert [r["split_at"] for r in results["splits"]] == ["layer1", "layer2"]
    for row in results["splits"]:
        # A = B: the identity start is B itself, exactly
        assert row["before_init"] == "identity" and row["before"] == results["b_own"]
        assert {"regression", "trained"} <= set(row)
        assert (
            load_stitch(out / f"stitch-{row['split_at']}.ckpt").entry["split_at"] == row["split_at"]
        )


def test_compare_streams_scores_predictions_with_real_bytes(tmp_path: Path) -> None:
    from featcodec.eval.data import synthetic_eval_set
    from featcodec.eval.stitching import compare_streams

    test = synthetic_eval_set("test", 3, 16, 0)
    labels = next(test.batches(3))["label"].tolist()
    streams = tmp_path / "streams"
    streams.mkdir()
    predictions = {}
    for i, n in enumerate((10, 20, 33)):
        (streams / f"{i:05d}.fcb").write_bytes(b"x" * n)
        predictions[f"{i:05d}"] = {"class": labels[i] if i < 2 else (labels[i] + 1) % 5}
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    result = compare_streams({"run": (str(streams), str(tmp_path / "p.json"))}, 3, 16, 0)
    run = result["runs"]["run"]
    assert run["accuracy"] == pytest.approx(2 / 3) and run["bytes_per_image"] == 21
    assert run["bpp"] == pytest.approx(8 * 63 / (3 * 16 * 16))
    with pytest.raises(InputError, match="3 streams, the test split has 4"):
        compare_streams({"run": (str(streams), str(tmp_path / "p.json"))}, 4, 16, 0)


# featcodec decode --stitch ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coded(networks: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny codecs on the fixture network (different weights), a stitch from the first
    into network ``self``, and images."""
    register_fixture_backbone()
    folder = tmp_path_factory.mktemp("coded")
    arch = default_arch(backbone="fixture_tinynet", codec=dict(TINY))
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        Codec.build(arch).save(folder / f"codec{seed}.ckpt")
        paths[f"codec{seed}"] = folder / f"codec{seed}.ckpt"
    stitch = StitchModule(networks["self"], codec_a=str(paths["codec0"]))
    assert stitch.entry["a"]["source"] == "codec" and stitch.decoded
    stitch.save(folder / "stitch.ckpt")
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    for i in range(3):
        pixels = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"im{i}.png")
    return {**paths, "stitch": folder / "stitch.ckpt", "images": folder / "images"}


def run(*args: object) -> int:
    return main([str(a) for a in args])


def _fails(capsys, *args: object, message: str) -> None:
    capsys.readouterr()
    assert run(*args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("featcodec: error: "), err
    assert message in err, err


def test_decode_with_a_stitch_serves_streams_to_network_b(coded: dict, tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    assert run("encode", coded["images"], "-c", coded["codec0"], "-o", streams) == 0
    out = tmp_path / "out"
    assert (
        run("decode", streams, "-c", coded["codec0"], "--stitch", coded["stitch"], "-o", out) == 0
    )
    predictions = json.loads((out / "predictions.json").read_text())
    codec, stitched = Codec.from_checkpoint(coded["codec0"]), load_stitch(coded["stitch"])
    for i in range(3):
        decoded = codec.decode((streams / f"im{i}.fcb").read_bytes())
        probs = torch.softmax(stitched(decoded.features)[0], 0)
        assert predictions[f"im{i}"]["class"] == int(probs.argmax())
        assert predictions[f"im{i}"]["probabilities"] == pytest.approx(probs.tolist(), abs=1e-5)
        features = torch.load(out / f"im{i}.pt", weights_only=True)  # A's decoded tensor
        torch.testing.assert_close(features, decoded.features[0])


def test_decode_refuses_a_mismatched_stitch_and_writes_nothing(
    coded: dict, networks: dict, tmp_path: Path, capsys
) -> None:
    streams = tmp_path / "streams"
    assert run("encode", coded["images"], "-c", coded["codec1"], "-o", streams) == 0
    out = tmp_path / "out"
    args = ("decode", streams, "-c", coded["codec1"], "--stitch", coded["stitch"], "-o", out)
    _fails(capsys, *args, message="the stitch was trained on the codec")
    assert not out.exists()
    _fails(capsys, *args[:5], networks["self"], *args[6:], message="not a stitch checkpoint")
    assert not out.exists()
    # a stitch trained on A's task network pairs with a codec of that very network only
    net_path = tmp_path / "a.ckpt"
    codec0 = Codec.from_checkpoint(coded["codec0"])
    task = TaskModule(backbone="fixture_tinynet")
    task.net.load_state_dict({**codec0.front.state_dict(), **codec0.back.state_dict()})
    save_task(task, net_path)
    assert read_task_network(net_path)[0] == {"backbone": "fixture_tinynet", "num_classes": 5}
    from_net = tmp_path / "from-net.ckpt"
    StitchModule(networks["self"], network_a=str(net_path)).save(from_net)
    load_stitch(from_net).check_codec(codec0)  # the same network: accepted
    args = ("decode", streams, "-c", coded["codec1"], "--stitch", from_net, "-o", out)
    _fails(capsys, *args, message="the stitch was trained on the task network")
    assert not out.exists()


def test_decode_refuses_a_stitch_with_video_codecs_and_the_enhancement_layer(
    coded: dict, tmp_path: Path, capsys
) -> None:
    register_fixture_backbone()
    out = tmp_path / "out"
    video = ("decode", LEGACY / "video.fcb", "-c", LEGACY / "video.ckpt")
    _fails(capsys, *video, "--stitch", coded["stitch"], "-o", out, message="video codecs")
    scalable = ("decode", LEGACY / "scalable.fcb", "-c", LEGACY / "scalable.ckpt")
    _fails(capsys, *scalable, "--stitch", coded["stitch"], "-o", out, message="--layers base")
    # with the base layer only, the pairing is checked: this stitch is another codec's
    _fails(
        capsys,
        *scalable,
        "--layers",
        "base",
        "--stitch",
        coded["stitch"],
        "-o",
        out,
        message="the stitch was trained on the codec",
    )
    assert not out.exists()
