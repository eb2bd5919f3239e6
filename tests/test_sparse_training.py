"""A task network with a sparse front, trained to a FLOP budget, and codecs in front of it."""

from __future__ import annotations

import pytest
import torch
from conftest import quiet_trainer

from featcodec.codec.config import ArchConfig
from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec
from featcodec.models.sparse import SparseBasicBlock, SparsityConfig, count_flops
from featcodec.training import BaseCodecModule, TaskModule, load_task_network
from featcodec.training.datasets import SyntheticScenesDataModule, collate_scenes


@pytest.fixture(scope="module")
def data() -> SyntheticScenesDataModule:
    return SyntheticScenesDataModule(
        image_size=32, train_size=64, val_size=16, test_size=16, batch_size=16, seed=0
    )


@pytest.fixture(scope="module")
def dense_checkpoint(data, tmp_path_factory) -> str:
    torch.manual_seed(0)
    module = TaskModule(lr=3e-3)
    trainer = quiet_trainer(8, limit_val_batches=0)
    trainer.fit(module, data)
    path = tmp_path_factory.mktemp("dense") / "task.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def sparse_run(data, dense_checkpoint, tmp_path_factory) -> tuple[TaskModule, str, str]:
    """A sparse front trained from the dense network to θ = 0.25, with TensorBoard logs."""
    from lightning.pytorch.loggers import TensorBoardLogger

    torch.manual_seed(0)
    module = TaskModule(
        lr=0.05,
        sparse="layer2",
        sparsity=SparsityConfig(budget=0.25, weight=20.0, anneal=0.2),
        init_weights=dense_checkpoint,
    )
    logs = tmp_path_factory.mktemp("logs")
    trainer = quiet_trainer(
        16,
        limit_val_batches=1,
        val_check_interval=4,
        check_val_every_n_epoch=None,
        log_every_n_steps=1,
    )
    trainer.loggers = [TensorBoardLogger(logs, name="run", version="")]
    trainer.fit(module, data)
    path = logs / "sparse.ckpt"
    trainer.save_checkpoint(path)
    return module, str(path), str(logs / "run")


def test_training_holds_the_front_to_its_budget(sparse_run, data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module, _, logs = sparse_run
    events = EventAccumulator(logs, size_guidance={"images": 0, "scalars": 0}).Reload()
    train = [e.value for e in events.Scalars("train/flops_step")]
    assert train[0] > 0.6  # the masks start with every position active
    assert train[-1] < 0.5 * train[0]  # the sparsity losses pulled the fraction toward θ
    assert {"masks/layer1.0", "masks/layer2.0"} <= set(events.Tags()["images"])
    assert "val/flops" in events.Tags()["scalars"]
    # the eval-mode masks execute what the logged fraction says
    data.setup("validate")
    batch = collate_scenes([data.val_set[i] for i in range(8)])
    module.eval()
    with torch.no_grad():
        counted = count_flops(module.net, module.normalize(batch["image"]))
    assert counted["sparse_fraction"] < 0.9


def test_sparse_checkpoint_records_its_front(sparse_run, dense_checkpoint) -> None:
    _, path, _ = sparse_run
    net = load_task_network(path, "scene_resnet10", 5, sparse="layer2")
    assert isinstance(net.layer2[0], SparseBasicBlock)
    with pytest.raises(CheckpointError, match="sparse up to layer2"):
        load_task_network(path, "scene_resnet10", 5)  # a dense network expected
    with pytest.raises(CheckpointError, match="expected a classification scene_resnet10 with 5"):
        load_task_network(dense_checkpoint, "scene_resnet10", 5, sparse="layer2")


def test_init_weights_must_fit(dense_checkpoint, sparse_run) -> None:
    _, path, _ = sparse_run
    with pytest.raises(CheckpointError):
        TaskModule(init_weights=path)  # a sparse checkpoint into a dense network


def test_a_codec_codes_the_sparse_front(sparse_run) -> None:
    _, path, _ = sparse_run
    module = BaseCodecModule(
        task_checkpoint=path, sparse="layer2", N=16, M=16, attention=False, lmbda=4.0
    )
    codec = module.codec.eval()
    assert codec.arch["sparse"] == "layer2"
    assert ArchConfig.parse(codec.arch).sparse == "layer2"
    x = torch.rand(1, 3, 32, 32)
    stream = codec.encode(x[0])
    again = Codec.build(codec.arch)
    again.load_state_dict(codec.state_dict())
    assert again.eval().encode(x[0]) == stream  # rebuilt from its architecture alone
    assert codec.decode(stream).output.shape == (1, 5)
    with pytest.raises(CheckpointError, match="sparse up to layer2"):
        BaseCodecModule(task_checkpoint=path, N=16, M=16)  # forgot --model.sparse


def test_architecture_refuses_a_sparse_stage_that_does_not_exist(tiny_arch) -> None:
    with pytest.raises(CheckpointError, match="sparse = 'layer9'"):
        ArchConfig.parse({**tiny_arch, "sparse": "layer9"})
    with pytest.raises(CheckpointError, match="sparse"):
        ArchConfig.parse({**tiny_arch, "sparse": 2})


def test_experiment_sparse_reports_fronts_and_draws_masks(
    sparse_run, dense_checkpoint, tmp_path, capsys
) -> None:
    import json

    from featcodec.cli import main

    _, path, _ = sparse_run
    out, png = tmp_path / "fronts.json", tmp_path / "masks.png"
    args = ["experiment", "sparse", dense_checkpoint, path, "--labels", "dense", "θ=0.25"]
    args += ["--scenes", "12", "--image-size", "32", "--threads", "2"]
    assert main([*args, "--figure", str(png), "-o", str(out)]) == 0
    dense, sparse = json.loads(out.read_text())["fronts"]
    assert dense["label"] == "dense" and dense["sparse"] is None
    assert dense["front_fraction"] == 1.0 and dense["sparse_fraction"] == 1.0
    assert sparse["sparse"] == "layer2"
    assert sparse["front_gmac"] < dense["front_gmac"] == sparse["front_dense_gmac"]
    assert 0 <= sparse["active_on_objects"] <= 1 and 0 <= sparse["active_on_background"] <= 1
    assert 0 <= sparse["value"] <= 1 and sparse["scenes"] == 12
    assert png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "θ=0.25" in printed and "front GMAC" in printed
    args = ["experiment", "sparse", dense_checkpoint, "--scenes", "4", "--threads", "2"]
    out.unlink()
    assert main([*args, "--image-size", "32", "--figure", str(png), "-o", str(out)]) == 1
    assert not out.exists()  # no partial output
    assert main([*args, "--labels", "a", "b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "featcodec: error: --figure: none of the checkpoints has a sparse front",
        "featcodec: error: --labels: give one name per checkpoint",
    ]


@pytest.mark.parametrize("gate", ["mask", "derived"])
def test_gated_codec_trains_on_the_sparse_front(sparse_run, data, gate) -> None:
    _, path, _ = sparse_run
    torch.manual_seed(0)
    module = BaseCodecModule(
        task_checkpoint=path,
        sparse="layer2",
        gate=gate,
        N=16,
        M=16,
        attention=False,
        lmbda=4.0,
        cache_frozen=True,
    )
    assert module.codec.arch["codec"]["gate"] == gate
    trainer = quiet_trainer(4, limit_val_batches=1)
    trainer.fit(module, data)
    trainer.validate(module, data, verbose=False)
    # the real rate of validation is that of the streams `encode` writes (with the front's mask)
    data.setup("validate")
    images = [data.val_set[i]["image"] for i in range(16)]
    module.codec.eval()
    streams = [module.codec.encode(x) for x in images]
    expected = 8 * sum(map(len, streams)) / (16 * 32 * 32)
    assert float(trainer.callback_metrics["val/bpp"]) == pytest.approx(expected, rel=1e-6)
    assert module.codec.decode(streams[0]).output.shape == (1, 5)
