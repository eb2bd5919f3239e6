"""Tests for models.tasks: the task objects, their networks on split backbones, losses, metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from featcodec.models.backbones import Normalize, build_backbone
from featcodec.models.split import Split, split_model
from featcodec.models.tasks import TASKS as REGISTRY
from featcodec.models.tasks import Task, get_task, metric_higher_is_better
from featcodec.models.tasks.depth import DepthRMSE
from featcodec.models.tasks.detection import DetectionBack, DetectionMAP, detection_targets
from featcodec.models.tasks.keypoints import PCK, main_object_keypoints, soft_argmax
from featcodec.models.tasks.segmentation import SegmentationMIoU
from featcodec.models.tasks.trunk import crop_to
from featcodec.training.datasets.synthetic import SyntheticScenes, collate_scenes

TASKS = ["classification", "segmentation", "depth", "keypoints", "detection"]
DENSE = ["classification", "segmentation", "depth", "keypoints"]
STEPS = 8  # Adam steps of the loss-falls tests (every loss drops by a third or more by then)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run this module single-threaded: on the shared 2-core test machine, two intra-op threads
    contending with other processes made the training tests several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes() -> dict[str, Any]:
    """Eight 64×64 synthetic scenes, collated."""
    data = SyntheticScenes("train", 8, 64, seed=3)
    return collate_scenes([data[i] for i in range(len(data))])


@pytest.fixture(scope="module")
def splits(models: dict[str, nn.Module]) -> dict[str, Split]:
    """Each task network split at ``layer2``."""
    return {
        task: get_task(task).split(model, "layer2", "scene_resnet10")
        for task, model in models.items()
    }


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Each task network (random weights, eval mode), built once."""
    out = {}
    for task in TASKS:
        torch.manual_seed(0)
        out[task] = get_task(task).build("scene_resnet10", None, 5).eval()
    return out


def _images(b: int = 2, h: int = 64, w: int = 64) -> Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))


# --------------------------------------------------------------------------------------------
# Registry, shapes, splits
# --------------------------------------------------------------------------------------------


def test_registry_has_every_task() -> None:
    assert set(TASKS) <= set(REGISTRY)
    assert all(isinstance(REGISTRY[t], Task) and REGISTRY[t].name == t for t in TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("telepathy")


def test_dense_heads_need_a_resnet() -> None:
    with pytest.raises(ValueError, match="ResNet"):
        get_task("segmentation").build("mobilenet_v3_small", None, 5)


EXPECTED_SHAPES = {
    "classification": (2, 5),
    "segmentation": (2, 6, 64, 64),
    "depth": (2, 1, 64, 64),
    "keypoints": (2, 5, 2),
}


@pytest.mark.parametrize("task", DENSE)
def test_output_shape_and_split_at_layer2(
    task: str, models: dict[str, nn.Module], splits: dict[str, Split]
) -> None:
    model, split, x = models[task], splits[task], _images()
    with torch.no_grad():
        whole = model(x)
        features = split.front(x)
        parts = split.back(features)
    assert whole.shape == EXPECTED_SHAPES[task]
    assert features.shape == (2, 128, 8, 8) and (split.stride, split.channels) == (8, 128)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)


def test_detection_output_and_split_at_layer2(
    models: dict[str, nn.Module], splits: dict[str, Split]
) -> None:
    model, split, x = models["detection"], splits["detection"], _images()
    assert isinstance(split.back, DetectionBack)
    with torch.no_grad():
        whole = model(x)
        features = split.front(x)
        parts = split.back(features)
    assert features.shape == (2, 128, 8, 8) and (split.stride, split.channels) == (8, 128)
    assert len(whole) == len(parts) == 2
    for a, b in zip(whole, parts, strict=True):
        n = len(a["boxes"])
        assert a["boxes"].shape == (n, 4) and a["scores"].shape == a["labels"].shape == (n,)
        assert n > 0  # a random detector scores every class near 1/6, above the 0.05 threshold
        assert a["labels"].min() >= 1 and a["labels"].max() <= 5
        assert (a["boxes"] >= 0).all() and (a["boxes"] <= 64).all()
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)


def test_front_matches_the_classifier_front(splits: dict[str, Split]) -> None:
    """The task networks keep the backbone's names: same split node, same front weights keys."""
    classifier = build_backbone("scene_resnet10")
    reference = set(split_model(classifier, "layer2").front.state_dict())
    for task in TASKS:
        assert set(splits[task].front.state_dict()) == reference, task


def test_front_and_back_keys_partition_the_model_keys(
    models: dict[str, nn.Module], splits: dict[str, Split]
) -> None:
    for task in TASKS:
        prefix = "backbone." if task == "detection" else ""  # the detector's body is its backbone
        front = {prefix + k for k in splits[task].front.state_dict()}
        back = set(splits[task].back.state_dict())
        assert not front & back and front | back == set(models[task].state_dict()), task


def test_split_after_the_low_tap_is_refused(models: dict[str, nn.Module]) -> None:
    with pytest.raises(ValueError, match="not a cut"):
        get_task("segmentation").split(models["segmentation"], "layer3")


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_dense_output_size_rounds_up_to_the_stride(task: str, models: dict[str, nn.Module]) -> None:
    model = models[task]
    with torch.no_grad():
        assert model(_images(1, 48, 48)).shape[-2:] == (48, 48)
        out = model(_images(1, 60, 44))
    assert out.shape[-2:] == (64, 48)
    assert crop_to(out, (60, 44)).shape[-2:] == (60, 44)
    with pytest.raises(ValueError, match="smaller"):
        crop_to(out, (72, 44))


# --------------------------------------------------------------------------------------------
# Training losses fall
# --------------------------------------------------------------------------------------------


def _loss(model: nn.Module, task: str, x: Tensor, batch: dict[str, Any]) -> Tensor:
    torch.manual_seed(1)  # the detector samples anchors and proposals: the same draw every time
    t = get_task(task)
    return t.loss(t.forward(model, x, batch), batch)


@pytest.mark.parametrize("task", TASKS)
def test_loss_falls_on_a_fixed_batch(task: str, scenes: dict[str, Any]) -> None:
    if task == "detection":  # the slowest to train: half the batch
        scenes = {k: v[:4] for k, v in scenes.items()}
    torch.manual_seed(0)
    model = get_task(task).build("scene_resnet10", None, 5).train()
    x = Normalize()(scenes["image"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        initial = float(_loss(model, task, x, scenes))
    for _ in range(STEPS):
        loss = _loss(model, task, x, scenes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(_loss(model, task, x, scenes))
    assert math.isfinite(initial) and final < 0.8 * initial, (initial, final)


def test_split_back_trains_the_detector(scenes: dict[str, Any]) -> None:
    """A detector's back takes targets in training mode and returns the loss dict."""
    detection = get_task("detection")
    model = detection.build("scene_resnet10", None, 5).train()
    split = detection.split(model, "layer2")
    x = Normalize()(scenes["image"][:2])
    batch = {k: v[:2] for k, v in scenes.items()}
    losses = detection.forward(split.back, split.front(x), batch)
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness"}
    detection.loss(losses, batch).backward()
    with pytest.raises(ValueError, match="targets"):
        split.back(split.front(x))


# --------------------------------------------------------------------------------------------
# Targets and losses
# --------------------------------------------------------------------------------------------


def test_main_object_is_the_largest_box() -> None:
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 2.0, 40.0]])
    points = torch.arange(3 * 5 * 3, dtype=torch.float32).reshape(3, 5, 3)
    points[1, 4, :2] = torch.tensor([70.0, 5.0])  # outside the 64-pixel image
    batch = {"image": torch.zeros(1, 3, 64, 64), "boxes": [boxes], "keypoints": [points]}
    coords, valid = main_object_keypoints(batch)
    torch.testing.assert_close(coords[0, :4], points[1, :4, :2])
    assert valid.tolist() == [[True, True, True, True, False]]


def test_detection_targets_shift_labels_and_drop_empty_boxes() -> None:
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0], [3.0, 3.0, 3.0, 9.0]])
    (target,) = detection_targets({"boxes": [boxes], "box_labels": [torch.tensor([0, 4])]})
    assert target["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]] and target["labels"].tolist() == [1]


def test_depth_loss_ignores_masked_pixels() -> None:
    depth = torch.tensor([[[2.0, 3.0], [0.0, math.nan]]])
    pred = torch.tensor([[[[5.0, 7.0], [100.0, -50.0]]]], requires_grad=True)
    loss = get_task("depth").loss(pred, {"depth": depth})
    assert loss.item() == pytest.approx(math.sqrt((9 + 16) / 2))
    loss.backward()
    assert pred.grad is not None and pred.grad[0, 0, 1].abs().sum() == 0


# --------------------------------------------------------------------------------------------
# Soft-argmax
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1.0, 4.0])
def test_soft_argmax_of_a_one_hot_heatmap_is_the_pixel_centre(stride: float) -> None:
    heat = torch.full((1, 2, 6, 8), -1e4)
    heat[0, 0, 2, 5] = 0.0  # row 2, column 5
    heat[0, 1, 0, 0] = 0.0
    xy = soft_argmax(heat, stride)
    expected = torch.tensor([[[5.5 * stride, 2.5 * stride], [0.5 * stride, 0.5 * stride]]])
    torch.testing.assert_close(xy, expected)


def test_soft_argmax_of_a_flat_heatmap_is_the_image_centre() -> None:
    xy = soft_argmax(torch.zeros(2, 3, 16, 16), 4.0)
    torch.testing.assert_close(xy, torch.full((2, 3, 2), 32.0))


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_each_task_makes_its_metric() -> None:
    expected = {
        "segmentation": (SegmentationMIoU, "miou", True),
        "depth": (DepthRMSE, "depth_rmse", False),
        "keypoints": (PCK, "pck", True),
        "detection": (DetectionMAP, "map", True),
    }
    for task, (cls, name, better) in expected.items():
        metric = get_task(task).metric(5)
        assert isinstance(metric, cls) and metric.name == name == get_task(task).metric_name
        assert metric.higher_is_better is better and metric_higher_is_better(name) is better
        assert get_task(task).higher_is_better is better
        with pytest.warns(UserWarning, match="before the ``update``"):
            assert math.isnan(metric.compute())  # nothing seen yet


def _one_hot_logits(mask: Tensor, classes: int = 6) -> Tensor:
    return torch.nn.functional.one_hot(mask, classes).permute(0, 3, 1, 2).float() * 10


def test_miou_known_answers(scenes: dict[str, Any]) -> None:
    metric = SegmentationMIoU(5)
    metric.update(_one_hot_logits(scenes["mask"]), scenes)
    assert metric.compute() == 1.0

    mask = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 0], [1, 1]]])
    logits = torch.nn.functional.pad(_one_hot_logits(pred), (0, 6, 0, 6))  # padded to 8x8
    metric = SegmentationMIoU(5)
    metric.update(logits, {"mask": mask})
    assert metric.compute() == pytest.approx((1 / 2 + 2 / 3) / 2)  # background 1/2, class 0 2/3

    wrong = SegmentationMIoU(5)
    wrong.update(_one_hot_logits((scenes["mask"] + 1) % 6), scenes)
    assert wrong.compute() < 0.5


def test_depth_rmse_known_answers(scenes: dict[str, Any]) -> None:
    metric = DepthRMSE()
    metric.update(scenes["depth"][:, None], scenes)
    assert metric.compute() == 0.0

    depth = torch.tensor([[[2.0, 3.0], [-1.0, math.inf]]])
    metric = DepthRMSE()
    metric.update(torch.tensor([[[[5.0, 7.0], [1e6, 0.0]]]]), {"depth": depth})
    metric.update(torch.tensor([[[[2.0, 3.0], [1e6, 0.0]]]]), {"depth": depth})
    assert metric.compute() == pytest.approx(math.sqrt((9 + 16) / 4))  # pooled over 4 pixels


def test_pck_known_answers(scenes: dict[str, Any]) -> None:
    coords, valid = main_object_keypoints(scenes)
    assert valid.any()
    perfect = PCK()
    perfect.update(coords, scenes)
    assert perfect.compute() == 1.0

    near = PCK(alpha=0.1)  # threshold 6.4 px at 64×64
    near.update(coords + torch.tensor([3.0, 4.0]), scenes)  # 5 px off: still correct
    assert near.compute() == 1.0

    half = PCK()
    off = coords.clone()
    off[::2] += 20.0  # every other scene far off
    half.update(off, scenes)
    n_off = int(valid[::2].sum())
    assert half.compute() == pytest.approx(1 - n_off / int(valid.sum()))


def _truth_as_detections(batch: dict[str, Any]) -> list[dict[str, Tensor]]:
    return [
        {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["boxes"]))}
        for t in detection_targets(batch)
    ]


def test_map_known_answers(scenes: dict[str, Any]) -> None:
    perfect = DetectionMAP()
    perfect.update(_truth_as_detections(scenes), scenes)
    assert perfect.compute() == pytest.approx(1.0)

    wrong_class = DetectionMAP()
    wrong_class.update(
        [{**d, "labels": d["labels"] % 5 + 1} for d in _truth_as_detections(scenes)], scenes
    )
    assert wrong_class.compute() < 0.5

    shifted = DetectionMAP()
    shifted.update([{**d, "boxes": d["boxes"] + 3.0} for d in _truth_as_detections(scenes)], scenes)
    assert 0.0 < shifted.compute() < 0.9

    empty = DetectionMAP()
    nothing = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty.update([{**nothing, "scores": torch.zeros(0)}] * len(scenes["boxes"]), scenes)
    assert empty.compute() == 0.0


@pytest.mark.parametrize("task", TASKS)
def test_metrics_accept_the_model_outputs(
    task: str, models: dict[str, nn.Module], scenes: dict[str, Any]
) -> None:
    metric = get_task(task).metric(5)
    with torch.no_grad():
        output = models[task](Normalize()(scenes["image"][:4]))
    metric.update(output, {k: v[:4] for k, v in scenes.items()})
    value = float(metric.compute())
    assert math.isfinite(value) and value >= 0.0
    if metric.higher_is_better:
        assert value <= 1.0
