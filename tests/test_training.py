from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec
from featcodec.training import BaseCodecModule, TaskModule
from featcodec.training.datasets import SyntheticScenes, SyntheticScenesDataModule, collate_scenes


def _trainer(steps: int, **kw: object) -> pl.Trainer:
    return quiet_trainer(steps, limit_val_batches=0, **kw)


@pytest.fixture(scope="module")
def data() -> SyntheticScenesDataModule:
    return SyntheticScenesDataModule(
        image_size=32, train_size=64, val_size=16, test_size=16, batch_size=16, seed=0
    )


@pytest.fixture(scope="module")
def fixed_batch() -> dict:
    ds = SyntheticScenes("train", size=64, image_size=32, seed=0)  # the data being fitted
    return collate_scenes([ds[i] for i in range(16)])


@pytest.fixture(scope="module")
def task_checkpoint(data, tmp_path_factory) -> str:
    torch.manual_seed(0)
    task = TaskModule(lr=3e-3)
    trainer = _trainer(20)
    trainer.fit(task, data)
    path = tmp_path_factory.mktemp("task") / "task.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def _codec_module(task_checkpoint: str, **kw: object) -> BaseCodecModule:
    args = dict(task_checkpoint=task_checkpoint, N=16, M=16, attention=False, lmbda=4.0, lr=2e-3)
    args.update(kw)
    return BaseCodecModule(**args)


@pytest.mark.slow
def test_task_training_lowers_the_loss(data, fixed_batch) -> None:
    torch.manual_seed(0)
    task = TaskModule(lr=3e-3)
    task.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(task(fixed_batch["image"]), fixed_batch["label"])
    task.train()
    _trainer(40).fit(task, data)
    task.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(task(fixed_batch["image"]), fixed_batch["label"])
    assert after < before


@pytest.mark.parametrize("distortion", ["ce", "distill"])
def test_codec_training_lowers_the_loss(task_checkpoint, data, fixed_batch, distortion) -> None:
    torch.manual_seed(0)
    module = _codec_module(task_checkpoint, distortion=distortion)

    def loss() -> float:
        module.eval()
        with torch.no_grad():
            rd, _ = module.compute_loss(fixed_batch)
        return float(rd.loss)

    before = loss()
    module.train()
    _trainer(30).fit(module, data)
    assert loss() < before


def test_back_end_is_frozen_during_training(task_checkpoint, data) -> None:
    module = _codec_module(task_checkpoint)
    back = {k: v.clone() for k, v in module.codec.back.state_dict().items()}
    front = {k: v.clone() for k, v in module.codec.front.state_dict().items()}
    _trainer(3).fit(module, data)
    for k, v in module.codec.back.state_dict().items():
        assert torch.equal(v, back[k]), k  # weights and BN statistics untouched
    for k, v in module.codec.front.state_dict().items():
        assert torch.equal(v, front[k]), k


def test_aux_optimizer_moves_only_the_quantiles(task_checkpoint, data) -> None:
    module = _codec_module(task_checkpoint)
    q = module.codec.base.entropy_z.quantiles.detach().clone()
    trainer = _trainer(3)
    trainer.fit(module, data)
    opt, aux = trainer.optimizers
    assert [
        p is module.codec.base.entropy_z.quantiles for g in aux.param_groups for p in g["params"]
    ] == [True]
    assert all(
        p is not module.codec.base.entropy_z.quantiles
        for g in opt.param_groups
        for p in g["params"]
    )
    assert not torch.equal(q, module.codec.base.entropy_z.quantiles.detach())


def test_training_checkpoint_rebuilds_the_codec_alone(task_checkpoint, data, tmp_path) -> None:
    module = _codec_module(task_checkpoint)
    trainer = _trainer(2)
    trainer.fit(module, data)
    path = tmp_path / "codec.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # nothing but plain data in it
    assert ckpt["featcodec"]["kind"] == "codec"
    codec = Codec.from_checkpoint(path)
    assert codec.fingerprint == module.codec.eval().fingerprint
    x = torch.rand(3, 32, 32)
    torch.testing.assert_close(
        codec.decode(module.codec.encode(x)).output, module.codec(x[None]).output
    )
    # a codec checkpoint is not a task network, and vice versa
    with pytest.raises(CheckpointError, match="codec checkpoint, not a task"):
        _codec_module(str(path))
    with pytest.raises(CheckpointError, match="task checkpoint, not a codec"):
        Codec.from_checkpoint(task_checkpoint)


def test_task_checkpoint_must_match_the_backbone(task_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="expected a classification scene_resnet10 with 7"):
        _codec_module(task_checkpoint, num_classes=7)
    with pytest.raises(CheckpointError, match="holds a classification .* expected a depth"):
        _codec_module(task_checkpoint, task="depth")


@pytest.mark.slow
def test_real_bytes_match_the_estimate_on_a_trained_codec(task_checkpoint) -> None:
    torch.manual_seed(0)
    data = SyntheticScenesDataModule(image_size=64, train_size=256, batch_size=16, seed=1)
    module = _codec_module(task_checkpoint, lmbda=50.0, N=32, M=32, lr=3e-3)
    _trainer(150).fit(module, data)
    codec = module.codec.eval()
    ds = SyntheticScenes("test", size=6, image_size=256, seed=1)
    real = estimate = 0.0
    for i in range(len(ds)):
        x = ds[i]["image"][None]
        from featcodec.codec.bitstream import unpack

        stream = unpack(codec.encode(x))
        real += 8 * sum(len(s.payload) for s in stream.sections)
        estimate += float(codec(x).bits())
    assert estimate > 20_000  # enough bits for per-stream constants not to dominate
    assert abs(real / estimate - 1) < 0.02


def test_cached_frozen_outputs_equal_recomputed_ones(task_checkpoint, fixed_batch) -> None:
    from featcodec.training.callbacks import FrozenFeatureCache

    module = _codec_module(task_checkpoint, cache_frozen=True).eval()
    cache = next(c for c in module.configure_callbacks() if isinstance(c, FrozenFeatureCache))
    module.frozen_cache = cache  # what the callback's setup does
    first = module.frozen_outputs(fixed_batch, cache=True)
    assert len(cache.items) == 16
    image = fixed_batch["image"].clone()
    fixed_batch["image"].zero_()  # the cache, not the images, must now supply the outputs
    try:
        cached = module.frozen_outputs(fixed_batch, cache=True)
    finally:
        fixed_batch["image"].copy_(image)
    assert first[2] is None and cached[2] is None  # a dense front has no mask
    for a, b in zip(first[:2], cached[:2], strict=True):
        torch.testing.assert_close(a, b)
    uncached = module.frozen_outputs(fixed_batch, cache=False)
    for a, b in zip(first[:2], uncached[:2], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_validation_logs_the_real_rd_point_to_tensorboard(task_checkpoint, data, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = _codec_module(task_checkpoint)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        val_check_interval=2,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="run", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload()
    assert "rd/val" in events.Tags()["images"]
    assert len(events.Images("rd/val")) == 2  # one RD point per validation
    bpp = [e.value for e in events.Scalars("val/bpp")]
    assert len(bpp) == 2
    # the logged rate is that of real streams of the validation features
    module.codec.eval()
    data.setup("validate")
    streams = [
        s
        for batch in data.val_dataloader()
        for s in module.codec.encode_batch(module.codec.features(batch["image"]), (32, 32))
    ]
    assert bpp[-1] == pytest.approx(8 * sum(map(len, streams)) / (len(streams) * 32 * 32), rel=1e-5)
    single = module.codec.encode(data.val_set[0]["image"])
    assert single == streams[0]
