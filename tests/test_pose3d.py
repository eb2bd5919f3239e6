"""3-D keypoints (HEMlets): tilted synthetic scenes, triplet targets, soft-argmax, losses,
MPJPE, the Human3.6M-style loader and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from featcodec.models.tasks import get_task, task_of
from featcodec.models.tasks.hemlets import (
    PoseMaps,
    gaussian_heatmaps,
    hemlets_loss,
    relative_order,
    triplet_heatmaps,
)
from featcodec.models.tasks.pose3d import Pose3DLoss
from featcodec.training.datasets import SyntheticScenes, collate_scenes, render_scene
from featcodec.training.datasets.synthetic.pose import PARTS, depth_order

# -- the synthetic scenes in 3-D -------------------------------------------------------------


def _project(joints: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    fx, fy, cx, cy = k.tolist()
    z = joints[..., 2]
    return torch.stack([joints[..., 0] * fx / z + cx, joints[..., 1] * fy / z + cy], dim=-1)


@pytest.mark.parametrize("tilt", [0.0, 60.0])
def test_scene_joints_project_onto_the_keypoints(tilt: float) -> None:
    for seed in range(6):
        scene = render_scene(seed, 64, tilt=tilt, fog=0.3 if tilt else 0.0)
        xy = _project(scene.joints3d.double(), scene.intrinsics.double())
        assert torch.allclose(xy, scene.keypoints[..., :2].double(), atol=1e-3)
        assert torch.equal(scene.parts, torch.from_numpy(PARTS[scene.box_labels.numpy()]))
        z = scene.joints3d[..., 2].numpy()
        assert np.array_equal(scene.part_order.numpy(), depth_order(z, scene.parts.numpy()))


def test_untilted_cards_are_flat_and_tilted_ones_are_not() -> None:
    flat = [render_scene(seed, 64) for seed in range(8)]
    for scene in flat:  # every keypoint at its card's depth: no part has a depth order
        z = scene.joints3d[..., 2]
        assert torch.allclose(z, scene.shape_depth[:, None].expand_as(z), atol=1e-5)
        assert not scene.part_order.any()
    tilted = [render_scene(seed, 64, tilt=60.0) for seed in range(8)]
    orders = torch.cat([s.part_order.flatten() for s in tilted])
    assert {-1, 0, 1} <= set(orders.tolist())  # all three orders occur


def test_tilt_keeps_the_layout_and_the_depth_map_holds_the_joints_depths() -> None:
    for seed in range(4):
        flat, tilted = render_scene(seed, 64), render_scene(seed, 64, tilt=50.0)
        assert torch.equal(flat.box_labels, tilted.box_labels)  # same shapes, same classes
        assert torch.equal(flat.keypoints[:, 0], tilted.keypoints[:, 0])  # centres stay
        # where the main shape's centre shows, the depth map is that joint's depth
        k = int(((tilted.boxes[:, 2:] - tilted.boxes[:, :2]).prod(-1)).argmax())
        x, y, visible = tilted.keypoints[k, 0].tolist()
        if visible:
            assert float(tilted.depth[int(y), int(x)]) == pytest.approx(
                float(tilted.joints3d[k, 0, 2]), rel=0.02
            )


def test_fog_fades_far_pixels_more() -> None:
    clear, foggy = render_scene(3, 64, tilt=40.0), render_scene(3, 64, tilt=40.0, fog=0.5)
    contrast = (foggy.image - 0.7).abs() / (clear.image - 0.7).abs().clamp_min(1e-6)
    near = clear.depth < clear.depth.median()
    keep = (clear.image - 0.7).abs() > 0.05
    assert contrast[:, near & keep[0]].mean() > contrast[:, ~near & keep[0]].mean()


def test_the_scene_options_are_refused_out_of_range() -> None:
    with pytest.raises(ValueError, match="tilt"):
        SyntheticScenes("train", 2, 32, tilt=90.0)
    with pytest.raises(ValueError, match="fog"):
        SyntheticScenes("train", 2, 32, fog=-1.0)


# -- HEMlets targets, soft-argmax, losses ------------------------------------------------------


def test_triplets_put_the_mass_on_the_map_of_the_parts_order() -> None:
    points = torch.tensor([[[8.5, 8.5], [24.5, 8.5], [8.5, 24.5]]])
    parts = torch.tensor([[[0, 1], [0, 2], [1, 2]]])
    order = torch.tensor([[1, -1, 0]])
    t = triplet_heatmaps(points, parts, order, (32, 32), sigma=2.0)
    assert t.shape == (1, 9, 32, 32)
    mass = t.flatten(2).sum(-1)[0].reshape(3, 3)  # (part, T^-1 T^0 T^+1)
    for k, r in enumerate(order[0].tolist()):
        assert mass[k, r + 1] > 0 and mass[k].sum() == mass[k, r + 1]
    # the part's map peaks (1.0) at both of its joints, nothing elsewhere is as high
    first = t[0, 2]  # part 0, T^+1
    assert first[8, 8] == pytest.approx(1.0) and first[8, 24] == pytest.approx(1.0)
    assert first[24, 8] < 1e-6


def test_relative_order_uses_the_threshold() -> None:
    zp = torch.tensor([1.0, 1.0, 1.0, 1.0])
    zc = torch.tensor([0.5, 1.04, 0.96, 1.5])
    assert relative_order(zp, zc, 0.05).tolist() == [1, 0, 0, -1]


def test_soft_argmax_of_a_peaked_map_returns_its_peak_and_its_depth() -> None:
    layout = PoseMaps(num_joints=2, num_parts=1)
    maps = torch.zeros(1, layout.channels, 16, 24)
    _, _, logits, depth = layout.split(maps)
    logits[0, 0, 5, 7] = 3000.0  # one pixel: its cell's mean logit is 3000 / 64
    logits[0, 1, 8:16, 16:24] = 60.0  # a whole cell
    depth[0, 0] = 0.25
    depth[0, 1, 8:16, 16:24] = -1.5
    joints = layout.joints(maps)
    assert layout.cell == 8  # the head's resolution: cell centres at 4, 12, 20, ...
    assert torch.allclose(joints[0, 0], torch.tensor([4.0, 4.0, 0.25]), atol=1e-4)
    assert torch.allclose(joints[0, 1], torch.tensor([20.0, 12.0, -1.5]), atol=1e-4)
    fine = PoseMaps(num_joints=2, num_parts=1)
    fine.cell = 1  # per pixel: the peak pixel's centre
    assert torch.allclose(fine.joints(maps)[0, 0], torch.tensor([7.5, 5.5, 0.25]), atol=1e-4)


def _scene_batch(n: int = 4, size: int = 32) -> dict:
    data = SyntheticScenes("train", n, size, tilt=60.0, fog=0.3)
    return collate_scenes([data[i] for i in range(n)])


def _perfect_maps(batch: dict, sigma: float, depth_offset: float = 0.0) -> torch.Tensor:
    """Maps of the main objects' ground truth: exact heatmaps and triplets, logits peaked on
    each joint's pixel and depth maps at its root-relative depth (+ ``depth_offset`` on every
    joint but the root)."""
    task = get_task("pose3d")
    target = task.targets_of(batch)
    size = tuple(batch["image"].shape[-2:])
    heat = gaussian_heatmaps(target.xy, size, sigma)
    trip = triplet_heatmaps(target.xy, target.parts, target.order, size, sigma)
    cell = task.layout.cell
    col = (target.xy[..., 0] // cell).clamp(0, size[1] // cell - 1).long()
    row = (target.xy[..., 1] // cell).clamp(0, size[0] // cell - 1).long()
    logits = torch.zeros(*col.shape, size[0] // cell, size[1] // cell)
    b, j = col.shape
    logits[torch.arange(b)[:, None], torch.arange(j)[None], row, col] = 80.0
    logits = logits.repeat_interleave(cell, -2).repeat_interleave(cell, -1)  # whole cells
    z = target.joints[..., 2].clone()
    z[:, 1:] += depth_offset
    depth = z[..., None, None].expand_as(heat)
    return torch.cat([heat, trip, logits, depth], dim=1)


def _at_cell_centres(batch: dict) -> dict:
    """The batch with the main objects' keypoints moved to the centres of their soft-argmax
    cells, and their 3-D joints moved with them (so the perfect maps' soft-argmax is exact)."""
    cell = get_task("pose3d").layout.cell
    for i in range(len(batch["boxes"])):
        k = int(((batch["boxes"][i][:, 2:] - batch["boxes"][i][:, :2]).prod(-1)).argmax())
        kp = batch["keypoints"][i].clone()
        kp[k, :, :2] = (kp[k, :, :2] // cell) * cell + cell / 2
        batch["keypoints"][i] = kp
        j3 = batch["joints3d"][i].clone()
        fx, fy, cx, cy = batch["intrinsics"][i].tolist()
        z = j3[k, :, 2]
        j3[k, :, 0] = (kp[k, :, 0] - cx) * z / fx
        j3[k, :, 1] = (kp[k, :, 1] - cy) * z / fy
        batch["joints3d"][i] = j3
    return batch


def test_every_loss_is_zero_on_the_ground_truth() -> None:
    batch = _at_cell_centres(_scene_batch())
    task = get_task("pose3d")
    maps = _perfect_maps(batch, task.config.sigma)
    assert float(task.loss(maps, batch)) == pytest.approx(0.0, abs=1e-4)
    # and each term grows away from it
    noisy = maps + 0.05 * torch.randn_like(maps)
    assert float(task.loss(noisy, batch)) > 1e-3
    target = task.targets_of(batch)
    _, t, _, _ = task.layout.split(maps)
    assert float(hemlets_loss(t, t.clone(), target.part_valid, 4.0)) == 0.0


def test_mpjpe_of_a_known_depth_offset() -> None:
    batch = _at_cell_centres(_scene_batch())
    task = get_task("pose3d")
    exact = task.metric(5)
    exact.update(_perfect_maps(batch, 4.0), batch)
    values = exact.compute_all()
    assert values["mpjpe"] == pytest.approx(0.0, abs=1e-3)
    assert values["pck3d"] == 1.0 and values["depth_order"] == 1.0
    # every non-root joint δ deeper: its back-projection moves by δ·‖((x−cx)/fx, (y−cy)/fy, 1)‖
    delta = 0.3
    metric = task.metric(5)
    metric.update(_perfect_maps(batch, 4.0, delta), batch)
    target = task.targets_of(batch)
    fx, fy, cx, cy = target.intrinsics[:, None].unbind(-1)
    ray = torch.stack([(target.xy[..., 0] - cx) / fx, (target.xy[..., 1] - cy) / fy], -1)
    err = delta * (1 + ray.square().sum(-1)).sqrt()
    err[:, 0] = 0.0  # the root is not offset
    expected = float(err[target.valid].mean())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-3)


def test_the_loss_options_are_checked_and_reach_the_task() -> None:
    arch = {"task": "pose3d", "task_options": {"alpha": 0.5, "triplet_loss": False}}
    task = task_of(arch)
    assert task.config.alpha == 0.5 and not task.config.triplet_loss
    assert get_task("pose3d").config == Pose3DLoss()  # the registered one is untouched
    with pytest.raises(ValueError, match="unknown pose3d option"):
        Pose3DLoss.from_options({"alpah": 1.0})
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Pose3DLoss.from_options({"sigma": 0})
    with pytest.raises(ValueError, match="true or false"):
        Pose3DLoss.from_options({"heatmap_loss": "yes"})


def test_the_ablations_switch_the_intermediate_losses_off() -> None:
    batch = _scene_batch()
    torch.manual_seed(0)
    maps = torch.randn(4, 27, 32, 32)
    full = float(get_task("pose3d").loss(maps, batch))
    only_3d = get_task("pose3d").configure({"heatmap_loss": False, "triplet_loss": False})
    plus_2d = get_task("pose3d").configure({"triplet_loss": False})
    a, b = float(only_3d.loss(maps, batch)), float(plus_2d.loss(maps, batch))
    assert a < b < full


# -- the network ----------------------------------------------------------------------------


def test_the_network_splits_and_learns_on_tilted_scenes() -> None:
    from featcodec.training import TaskModule

    torch.manual_seed(0)
    module = TaskModule(task="pose3d", lr=3e-3)
    batch = _scene_batch(8, 32)
    x = module.normalize(batch["image"])
    net = module.net
    split = module.task.split(net, "layer2")
    net.eval()
    assert torch.allclose(split.back(split.front(x)), net(x), atol=1e-5)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = module.task.loss(net(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_canonical_order_does_not_depend_on_the_datas_labels() -> None:
    """The outline keypoints' labels follow the card's rotation, which a symmetric card does
    not show: relabelled by direction about the root, the targets are the same whatever the
    data's labels, and the parts' depth orders come from the relabelled joints."""
    from featcodec.models.tasks.pose3d import canonical_order

    xy = torch.tensor([[10.0, 10.0], [10.0, 15.0], [14.0, 9.0], [6.0, 10.5], [10.0, 4.0]])
    assert canonical_order(xy).tolist() == [0, 2, 1, 3, 4]  # +x first, then clockwise
    batch = _scene_batch()
    task = get_task("pose3d")
    before = task.targets_of(batch)
    shuffled = dict(batch)
    perm = torch.tensor([0, 3, 1, 4, 2])
    shuffled["keypoints"] = [k[:, perm] for k in batch["keypoints"]]
    shuffled["joints3d"] = [j[:, perm] for j in batch["joints3d"]]
    after = task.targets_of(shuffled)
    assert torch.equal(before.xy, after.xy) and torch.equal(before.joints, after.joints)
    assert torch.equal(before.order, after.order)
    plain = get_task("pose3d").configure({"canonical_order": False}).targets_of(shuffled)
    assert not torch.equal(plain.xy, before.xy)
    assert torch.equal(plain.order, torch.stack([o[0] for o in _main(shuffled, "part_order")]))


def _main(batch: dict, key: str) -> list[torch.Tensor]:
    out = []
    for boxes, value in zip(batch["boxes"], batch[key], strict=True):
        k = int(((boxes[:, 2:] - boxes[:, :2]).prod(-1)).argmax())
        out.append(value[k : k + 1])
    return out


@pytest.mark.parametrize(
    "options",
    [{"num_joints": 10**9}, {"features": 10**7}, {"num_parts": 0}, {"num_joints": 2.5}],
)
def test_absurd_network_options_are_refused_before_allocating(options: dict) -> None:
    with pytest.raises(ValueError, match="must be an integer in 1.."):
        get_task("pose3d").network("scene_resnet10", None, 5, options)


def test_a_forged_architecture_in_a_codec_checkpoint_gets_one_line(tmp_path: Path) -> None:
    from featcodec.codec.errors import CheckpointError
    from featcodec.codec.facade import Codec

    module_arch = {"task": "pose3d", "task_options": {}}
    codec = Codec.build({**_tiny_arch(), **module_arch})
    path = tmp_path / "c.ckpt"
    codec.save(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["featcodec"]["arch"]["task_options"] = {"num_joints": 10**9}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        Codec.from_checkpoint(path)
    assert "num_joints" in str(e.value) and "\n" not in str(e.value)


def _tiny_arch() -> dict:
    from conftest import TINY

    from featcodec.codec.facade import default_arch

    return default_arch(codec=dict(TINY))
