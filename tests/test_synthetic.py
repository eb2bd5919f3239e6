"""Tests for the procedural synthetic scenes, clips, datasets and data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featcodec.training.datasets import (
    SHAPE_CLASSES,
    Clip,
    Scene,
    SyntheticClips,
    SyntheticScenes,
    SyntheticScenesDataModule,
    amodal_mask,
    collate_clips,
    collate_scenes,
    outline_inside,
    outline_radius,
    render_clip,
    render_scene,
    sample_layout,
)

SIZES = [(64, 64), (128, 128), (96, 160), (33, 47)]
SCENE_FIELDS = (
    "image",
    "mask",
    "instances",
    "depth",
    "boxes",
    "box_labels",
    "keypoints",
    "joints3d",
    "parts",
    "part_order",
    "intrinsics",
)


def _pixel_centres(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``x``, ``y`` of shape (H, W)."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5,
        torch.arange(w, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    return x, y


def _scenes(size: tuple[int, int], count: int, start: int = 0) -> list[Scene]:
    return [render_scene(seed, size) for seed in range(start, start + count)]


# --------------------------------------------------------------------------------------------
# Geometry of the canonical outlines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", range(len(SHAPE_CLASSES)))
def test_outline_inside_agrees_with_radial_function(cls: int) -> None:
    """The convex-piece inside test and the radial function r(φ) describe the same outline."""
    rng = np.random.default_rng(cls)
    qx, qy = rng.uniform(-1.05, 1.05, (2, 50_000))
    rho, phi = np.hypot(qx, qy), np.arctan2(qy, qx)
    r = outline_radius(cls, phi)
    expected = rho < r
    got = outline_inside(cls, qx, qy)
    away = np.abs(rho - r) > 1e-9
    assert np.array_equal(got[away], expected[away])
    assert 0.15 < expected.mean() < 0.75  # a non-trivial shape in the sampled square
    assert np.all(r <= 1.0 + 1e-12) and np.isclose(r.max(), 1.0, atol=0.02)  # unit circumradius


def test_outline_classes_are_distinct_shapes() -> None:
    """Area fractions of the unit-circumradius outlines differ: the class is in the geometry."""
    g = np.linspace(-1, 1, 401)
    qx, qy = np.meshgrid(g, g)
    areas = [outline_inside(c, qx, qy).mean() * 4.0 for c in range(len(SHAPE_CLASSES))]
    assert areas[0] == pytest.approx(math.pi, rel=0.01)
    assert areas[1] == pytest.approx(2.0, rel=0.01)  # square inscribed in the unit circle
    assert areas[2] == pytest.approx(3 * math.sqrt(3) / 4, rel=0.01)  # equilateral triangle
    assert len({round(a, 2) for a in areas}) == len(areas)


# --------------------------------------------------------------------------------------------
# Single scenes
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_scene() -> None:
    a, b = render_scene(1234, (96, 160)), render_scene(1234, (96, 160))
    assert a.label == b.label
    for name in (*SCENE_FIELDS, "shape_depth", "transforms"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_different_seeds_give_different_scenes() -> None:
    images = [render_scene(seed, 64).image for seed in range(8)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert (images[i] - images[j]).abs().mean() > 0.01


@pytest.mark.parametrize("size", SIZES)
def test_shapes_dtypes_and_ranges(size: tuple[int, int]) -> None:
    h, w = size
    for scene in _scenes(size, 5, start=100):
        n = len(scene.box_labels)
        assert 1 <= n <= 4
        assert scene.image.shape == (3, h, w) and scene.image.dtype == torch.float32
        assert scene.mask.shape == (h, w) and scene.mask.dtype == torch.int64
        assert scene.instances.shape == (h, w) and scene.instances.dtype == torch.int64
        assert scene.depth.shape == (h, w) and scene.depth.dtype == torch.float32
        assert scene.boxes.shape == (n, 4) and scene.boxes.dtype == torch.float32
        assert scene.box_labels.shape == (n,) and scene.box_labels.dtype == torch.int64
        assert scene.keypoints.shape == (n, 5, 3) and scene.keypoints.dtype == torch.float32
        assert isinstance(scene.label, int) and 0 <= scene.label < len(SHAPE_CLASSES)
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        assert scene.image.std() > 0.02  # textured, not flat
        # Every annotated shape is visible, and instance ids are exactly 0..n.
        counts = torch.bincount(scene.instances.flatten(), minlength=n + 1)
        assert len(counts) == n + 1 and bool((counts[1:] > 0).all())
        assert int(scene.mask.max()) <= len(SHAPE_CLASSES)


def test_int_size_means_square() -> None:
    assert render_scene(5, 48).image.shape == (3, 48, 48)


def test_layout_scales_with_image_size() -> None:
    """Positions are relative to the image and radii follow R = f·s/z with f = min(H, W)/2."""
    small, large = sample_layout(77, 64), sample_layout(77, 128)
    assert [s.cls for s in small.shapes] == [s.cls for s in large.shapes]
    for a, b in zip(small.shapes, large.shapes, strict=True):
        np.testing.assert_allclose(b.centre, 2.0 * a.centre)
        assert b.radius == pytest.approx(2.0 * a.radius)
        assert a.radius == pytest.approx(32.0 * a.physical_size / a.depth)
    for size in SIZES:
        f = 0.5 * min(size)
        for scene in _scenes(size, 10):
            radius = torch.linalg.det(scene.transforms[:, :, :2].double()).sqrt()
            # distractors: s in [0.4, 0.7], z in [3, 5.9]; main: s in [1.1, 1.4], z in [2, 2.6]
            assert bool((radius >= f * 0.4 / 5.9).all() and (radius <= f * 1.4 / 2.0).all())


def test_main_object_is_the_largest_and_usually_the_label() -> None:
    layouts = [sample_layout(seed, 64) for seed in range(200)]
    for layout in layouts:
        main, *others = layout.shapes
        assert all(main.radius > o.radius and main.depth < o.depth for o in others)
    scenes = _scenes((64, 64), 100)
    agree = sum(int(s.label) == int(s.box_labels[0]) for s in scenes)
    assert agree >= 95  # occlusion by the border can rarely make a distractor dominant


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_boxes_enclose_masks_and_labels_agree(size: tuple[int, int]) -> None:
    h, w = size
    x, y = _pixel_centres(h, w)
    for scene in _scenes(size, 30):
        assert torch.equal(scene.mask == 0, scene.instances == 0)
        for k, (box, cls) in enumerate(zip(scene.boxes, scene.box_labels, strict=True)):
            x0, y0, x1, y1 = box.double().tolist()
            assert 0.0 <= x0 <= x1 <= w and 0.0 <= y0 <= y1 <= h
            pixels = scene.instances == k + 1
            assert bool((x[pixels] >= x0).all() and (x[pixels] <= x1).all())
            assert bool((y[pixels] >= y0).all() and (y[pixels] <= y1).all())
            assert bool((scene.mask[pixels] == cls + 1).all())
            # The box is the amodal extent, tight around the whole outline. A sharp tip can
            # poke past the last pixel centre it covers: every disc of radius √½ holds a pixel
            # centre, and one fits in the 41° star tip within 2.02 px of the apex, so the box
            # edge is within 2.75 px of a covered centre (for shapes large enough to hold it).
            amodal = torch.from_numpy(amodal_mask(int(cls), scene.transforms[k], size))
            assert bool((amodal | ~pixels).all())  # visible pixels belong to the outline
            xs, ys = x[amodal], y[amodal]
            radius = math.sqrt(abs(float(torch.linalg.det(scene.transforms[k, :, :2]))))
            slack = 2.75 if radius >= 6.0 else radius + 0.75
            assert xs.min() - slack <= x0 <= xs.min() and xs.max() <= x1 <= xs.max() + slack
            assert ys.min() - slack <= y0 <= ys.min() and ys.max() <= y1 <= ys.max() + slack


def test_depth_and_occlusion() -> None:
    size = (96, 128)
    overlaps = 0
    for scene in _scenes(size, 40):
        n = len(scene.box_labels)
        depth, inst = scene.depth, scene.instances
        for k in range(n):
            assert bool((depth[inst == k + 1] == scene.shape_depth[k]).all())
        background = depth[inst == 0]
        if len(background):
            assert float(background.min()) > float(scene.shape_depth.max())
            assert float(background.min()) >= 6.0 and float(background.max()) <= 10.0
        assert float(scene.shape_depth.min()) >= 2.0 and float(scene.shape_depth.max()) <= 6.0
        # Painter's order: composite the amodal outlines far to near and compare.
        amodal = [
            torch.from_numpy(amodal_mask(int(c), scene.transforms[k], size))
            for k, c in enumerate(scene.box_labels)
        ]
        expected = torch.zeros_like(inst)
        for k in torch.argsort(scene.shape_depth, descending=True).tolist():
            expected[amodal[k]] = k + 1
        assert torch.equal(inst, expected)
        for a in range(n):
            for b in range(a + 1, n):
                both = amodal[a] & amodal[b]
                if both.any():
                    overlaps += 1
                    near = a if scene.shape_depth[a] < scene.shape_depth[b] else b
                    assert not bool((inst[both] == (a + b - near) + 1).any())
                    assert bool((depth[both] <= scene.shape_depth[near]).all())
    assert overlaps >= 5  # the occlusion checks were exercised


def test_label_is_class_of_largest_visible_shape() -> None:
    multi = 0
    for scene in _scenes((64, 64), 60):
        counts = torch.bincount(scene.instances.flatten(), minlength=len(scene.box_labels) + 1)
        dominant = int(torch.argmax(counts[1:]))
        assert scene.label == int(scene.box_labels[dominant])
        multi += len(scene.box_labels) > 1 and len(set(scene.box_labels.tolist())) > 1
    assert multi >= 10  # the label was chosen among different classes many times


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_keypoints(size: tuple[int, int]) -> None:
    h, w = size
    visible_total = 0
    for scene in _scenes(size, 30):
        for k in range(len(scene.box_labels)):
            kps = scene.keypoints[k].double()
            x, y, vis = kps[:, 0], kps[:, 1], kps[:, 2]
            assert set(vis.tolist()) <= {0.0, 1.0}
            a = scene.transforms[k].double()
            # Centre, then the outline points on rays at rotation + j·90°.
            torch.testing.assert_close(kps[0, :2], a[:, 2], atol=1e-3, rtol=0)
            radius = torch.linalg.det(a[:, :2]).sqrt().item()
            rotation = math.atan2(a[1, 0].item(), a[0, 0].item())
            cls = int(scene.box_labels[k])
            for j in range(1, 5):
                phi = (j - 1) * math.pi / 2
                r = radius * float(outline_radius(cls, phi))
                expected = a[:, 2] + r * torch.tensor(
                    [math.cos(rotation + phi), math.sin(rotation + phi)], dtype=torch.float64
                )
                torch.testing.assert_close(kps[j, :2], expected, atol=1e-3, rtol=0)
            # Inside the image: inside the (clipped) box; visible iff its pixel shows the shape.
            in_image = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            box = scene.boxes[k].double()
            eps = 1e-4
            assert bool((x[in_image] >= box[0] - eps).all() and (x[in_image] <= box[2] + eps).all())
            assert bool((y[in_image] >= box[1] - eps).all() and (y[in_image] <= box[3] + eps).all())
            for j in range(5):
                if in_image[j]:
                    shown = int(scene.instances[int(y[j]), int(x[j])])
                    assert vis[j] == float(shown == k + 1)
                else:
                    assert vis[j] == 0.0
            visible_total += int(vis.sum())
            # The centre is always inside the outline: visible unless occluded or off-image.
            if in_image[0] and int(scene.instances[int(y[0]), int(x[0])]) == k + 1:
                assert vis[0] == 1.0
    assert visible_total > 50


def test_class_balance_of_labels() -> None:
    labels = [scene.label for scene in _scenes((48, 48), 200, start=5000)]
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert np.all(counts >= 10), counts


# --------------------------------------------------------------------------------------------
# Clips and flow
# --------------------------------------------------------------------------------------------


def _warp(previous: torch.Tensor, flow: torch.Tensor) -> np.ndarray:
    """Bilinearly sample ``previous`` (C, H, W) at ``p + flow(p)`` (flow (2, H, W)) with
    ``grid_sample``; returns (C, H, W) as numpy."""
    _, h, w = previous.shape
    y, x = np.mgrid[0:h, 0:w] + 0.5
    gx = (x + flow[0].numpy()) / w * 2.0 - 1.0  # align_corners=False: pixel centres
    gy = (y + flow[1].numpy()) / h * 2.0 - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None].astype(np.float32))
    return F.grid_sample(previous[None], grid, mode="bilinear", align_corners=False)[0].numpy()


def _same_surface_mask(clip: Clip, t: int) -> np.ndarray:
    """Pixels (H, W) of frame t whose surface point is visible in frame t−1 at all four
    bilinear neighbours of ``p + flow`` (not occluded, disoccluded or outside the image).

    (Computed in numpy: on a 2-core machine, torch's OpenMP pool can make each small op
    take milliseconds once another test has started it.)"""
    inst_t, inst_p = clip.instances[t].numpy(), clip.instances[t - 1].numpy()
    h, w = inst_t.shape
    y, x = np.mgrid[0:h, 0:w] + 0.5
    px = x + clip.flow[t, 0].numpy() - 0.5
    py = y + clip.flow[t, 1].numpy() - 0.5
    ok = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    j0 = np.clip(np.floor(px), 0, w - 1).astype(np.int64)
    i0 = np.clip(np.floor(py), 0, h - 1).astype(np.int64)
    j1, i1 = np.minimum(j0 + 1, w - 1), np.minimum(i0 + 1, h - 1)
    for i, j in ((i0, j0), (i0, j1), (i1, j0), (i1, j1)):
        ok &= inst_p[i, j] == inst_t
    return ok


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return [render_clip(seed, num_frames=4, size=(96, 128)) for seed in range(6)]


def test_clip_structure(clips: list[Clip]) -> None:
    for seed, clip in enumerate(clips):
        t, n = 4, len(clip.box_labels)
        assert clip.images.shape == (t, 3, 96, 128) and clip.flow.shape == (t, 2, 96, 128)
        assert clip.masks.shape == clip.instances.shape == clip.depths.shape == (t, 96, 128)
        assert clip.camera.shape == (t, 2, 3) and clip.shape_transforms.shape == (t, n, 2, 3)
        assert len(clip.boxes) == len(clip.keypoints) == len(clip.frames) == t
        assert all(b.shape == (n, 4) for b in clip.boxes)
        assert all(kp.shape == (n, 5, 3) for kp in clip.keypoints)
        assert torch.equal(clip.flow[0], torch.zeros_like(clip.flow[0]))
        torch.testing.assert_close(clip.camera[0], torch.eye(3)[:2])
        # Frame 0 is the still scene; instance ids keep their class in every frame.
        still = render_scene(seed, (96, 128))
        assert torch.equal(clip.images[0], still.image)
        assert torch.equal(clip.instances[0], still.instances)
        for frame in range(t):
            inst, mask = clip.instances[frame], clip.masks[frame]
            assert int(inst.max()) <= n
            for k in range(n):
                assert bool((mask[inst == k + 1] == clip.box_labels[k] + 1).all())
        # Things actually move.
        assert (clip.images[1:] - clip.images[:-1]).abs().mean() > 0.005


def test_clip_is_deterministic() -> None:
    a, b = render_clip(11, 3, (64, 64)), render_clip(11, 3, (64, 64))
    for name in ("images", "masks", "instances", "depths", "flow", "camera", "shape_transforms"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_flow_warps_previous_frame_onto_current(clips: list[Clip]) -> None:
    errors, zero_flow_errors, fractions = [], [], []
    for clip in clips:
        images = clip.images.numpy()
        for t in range(1, len(clip.frames)):
            valid = _same_surface_mask(clip, t)
            fractions.append(valid.mean())
            err = np.abs(_warp(clip.images[t - 1], clip.flow[t]) - images[t]).mean(axis=0)
            errors.append(err[valid].mean())
            assert err[valid].max() < 0.05  # only bilinear interpolation of smooth textures
            zero_flow_errors.append(np.abs(images[t - 1] - images[t]).mean())
    assert min(fractions) > 0.5  # most pixels are comparable: the check is not vacuous
    assert max(errors) < 0.005, errors  # measured: ≈0.0006 mean, 0.0014 worst
    assert np.mean(errors) < 0.2 * np.mean(zero_flow_errors)  # the flow explains the motion


def test_camera_only_flow_is_the_camera_displacement() -> None:
    clip = render_clip(21, num_frames=4, size=(64, 96), shape_motion=False)
    h, w = 64, 96
    x, y = _pixel_centres(h, w)
    ones = torch.ones_like(x)
    p = torch.stack([x, y, ones]).reshape(3, -1)
    bottom = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    for t in range(1, 4):
        cam_t = torch.cat([clip.camera[t].double(), bottom])
        cam_p = torch.cat([clip.camera[t - 1].double(), bottom])
        # A static point seen at p in frame t was at C(t−1) C(t)⁻¹ p in frame t−1.
        expected = ((cam_p @ torch.linalg.inv(cam_t)) @ p)[:2] - p[:2]
        torch.testing.assert_close(
            clip.flow[t].double(), expected.reshape(2, h, w), atol=2e-3, rtol=0
        )
        assert expected.abs().max() > 0.5  # the camera did move
        # Shapes move rigidly with the camera: transforms are C(t) C(0)⁻¹ applied to frame 0.
        first = torch.cat(
            [clip.shape_transforms[0].double(), bottom.expand(len(clip.box_labels), 1, 3)], 1
        )
        torch.testing.assert_close(
            clip.shape_transforms[t].double(), (cam_t @ first)[:, :2], atol=2e-3, rtol=0
        )


def test_shape_only_motion_leaves_background_still() -> None:
    clip = render_clip(8, num_frames=3, size=(64, 64), camera_motion=False)
    for t in range(1, 3):
        background = clip.instances[t] == 0
        assert bool((clip.flow[t][:, background] == 0).all())
        moving = clip.instances[t] > 0
        assert clip.flow[t][:, moving].abs().max() > 0.1
    torch.testing.assert_close(clip.camera, torch.eye(3)[:2].expand(3, 2, 3))


def test_clip_depth_keeps_background_behind_shapes(clips: list[Clip]) -> None:
    for clip in clips:
        for t, frame in enumerate(clip.frames):
            bg = clip.depths[t][clip.instances[t] == 0]
            assert float(bg.min()) > float(frame.shape_depth.max())


# --------------------------------------------------------------------------------------------
# Datasets and data module
# --------------------------------------------------------------------------------------------


def test_dataset_items_are_deterministic_and_cached() -> None:
    a = SyntheticScenes("train", size=5, image_size=(40, 56), seed=3)
    b = SyntheticScenes("train", size=5, image_size=(40, 56), seed=3, cache=False)
    assert len(a) == 5
    item = a[2]
    assert set(item) == {*SCENE_FIELDS, "label", "index"}
    assert int(item["index"]) == 2 and int(a[-1]["index"]) == 4
    assert item["label"].dtype == torch.int64 and item["label"].shape == ()
    assert a[2]["image"] is item["image"]  # memoised
    assert b[2]["image"] is not b[2]["image"]  # rendered again, but identical
    assert item["mask"].dtype == item["instances"].dtype == torch.int64
    for key in item:
        assert torch.equal(item[key], b[2][key]), key
    assert torch.equal(a[-1]["image"], a[4]["image"])
    with pytest.raises(IndexError):
        a[5]
    other_seed = SyntheticScenes("train", size=5, image_size=(40, 56), seed=4)
    assert not torch.equal(other_seed[2]["image"], item["image"])


def test_splits_never_share_scenes() -> None:
    splits = {
        s: SyntheticScenes(s, size=30, image_size=32, cache=False) for s in ("train", "val", "test")
    }
    images = {s: torch.stack([ds[i]["image"] for i in range(len(ds))]) for s, ds in splits.items()}
    flat = torch.cat([images[s].flatten(1) for s in splits])
    # All 90 scenes pairwise distinct, within and across splits.
    distance = torch.cdist(flat, flat)
    distance.fill_diagonal_(float("inf"))
    assert float(distance.min()) > 1.0


def test_collate_scenes() -> None:
    ds = SyntheticScenes("val", size=6, image_size=(32, 48))
    batch = collate_scenes([ds[i] for i in range(6)])
    assert batch["image"].shape == (6, 3, 32, 48)
    assert batch["label"].shape == (6,) and batch["label"].dtype == torch.int64
    assert batch["mask"].shape == batch["instances"].shape == batch["depth"].shape == (6, 32, 48)
    for key in ("boxes", "box_labels", "keypoints"):
        assert isinstance(batch[key], list) and len(batch[key]) == 6
    assert torch.equal(batch["boxes"][3], ds[3]["boxes"])


def test_clips_dataset_and_collate() -> None:
    ds = SyntheticClips("train", size=3, image_size=32, num_frames=3)
    item = ds[1]
    assert item["images"].shape == (3, 3, 32, 32) and item["flow"].shape == (3, 2, 32, 32)
    n = len(item["box_labels"])
    assert item["boxes"].shape == (3, n, 4) and item["keypoints"].shape == (3, n, 5, 3)
    batch = collate_clips([ds[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 3, 32, 32) and batch["camera"].shape == (3, 3, 2, 3)
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 3
    assert not torch.equal(
        ds[0]["images"], SyntheticClips("val", size=3, image_size=32)[0]["images"]
    )


def test_datamodule_batches() -> None:
    dm = SyntheticScenesDataModule(
        image_size=32, train_size=10, val_size=6, test_size=5, batch_size=4, seed=1
    )
    assert dm.num_classes == len(SHAPE_CLASSES) == 5
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert [len(b["label"]) for b in train] == [4, 4, 2]  # drop_last=False
    batch = train[0]
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4,)
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 4
    assert all(b.shape[1:] == (4,) for b in batch["boxes"])

    # Each epoch covers the training set once, in a shuffled order; validation order is fixed.
    def epoch(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.cat([b["image"] for b in dm.train_dataloader()])

    first, second = epoch(0), epoch(1)
    assert dm.train_set is not None
    in_order = torch.stack([dm.train_set[i]["image"] for i in range(10)])
    assert not torch.equal(first, second)
    assert torch.equal(
        first.flatten(1).sum(1).sort().values, in_order.flatten(1).sum(1).sort().values
    )
    val_a = torch.cat([b["image"] for b in dm.val_dataloader()])
    val_b = torch.cat([b["image"] for b in dm.val_dataloader()])
    assert val_a.shape == (6, 3, 32, 32) and torch.equal(val_a, val_b)
    dm.setup("test")
    test = torch.cat([b["image"] for b in dm.test_dataloader()])
    assert test.shape == (5, 3, 32, 32)
    assert not torch.equal(test[:5], val_a[:5])
