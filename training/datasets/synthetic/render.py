"""Rendering the synthetic scenes and clips, with their exact annotations.

Any frame of any clip is rendered by mapping each pixel centre back with ``T⁻¹`` (each
surface's canonical → pixel map, :mod:`.motion`) and evaluating the surface there::

    sample_layout(seed) ─▶ layout ─▶ T_k(t) = C(t)·P_k(t) ─▶ _render_frame ─▶ pixels, boxes
        ─▶ _annotate ─▶ Scene (label, masks, depth, keypoints)         render_scene(seed)
    frames 0..T−1, + backward flow and camera ─▶ Clip                   render_clip(seed)

* Pixel ``(i, j)`` has centre ``(x, y) = (j + 0.5, i + 0.5)``; it belongs to a shape if its
  centre is inside (no anti-aliasing), shapes are painted far to near.
* Boxes are the amodal extent of the analytic outline (polygon vertices or ellipse), clipped to
  the image, in the same continuous coordinates, rounded outwards to 1/1024 px (exact in
  float32, so a box never shrinks). Keypoints are the centre and the outline points on the
  rays at the shape's rotation + k·90°.

Shapes without any visible pixel at frame 0 are dropped (a new layout is drawn when none is
visible); frame 0 of ``render_clip(seed)`` is ``render_scene(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from featcodec.training.datasets.synthetic.geometry import (
    IDENTITY,
    SizeLike,
    as_size,
    inverse_affine,
    pixel_centres,
)
from featcodec.training.datasets.synthetic.layout import (
    BACKGROUND_DEPTH,
    SceneLayout,
    sample_layout,
)
from featcodec.training.datasets.synthetic.motion import ShapeMotion, backward_flow, sample_motion
from featcodec.training.datasets.synthetic.pose import (
    PARTS,
    apply_fog,
    check_scene_options,
    depth_order,
    depth_planes,
    focal_length,
    intrinsics,
    joints_3d,
    sample_tilts,
    tilt_transforms,
)
from featcodec.training.datasets.synthetic.shapes import (
    CANONICAL_KEYPOINTS,
    inside_grid,
    outline_box,
)

_MAX_ATTEMPTS = 64
_BOX_STEP = 1024.0  # boxes are rounded outwards to multiples of 1/1024 px (exact in float32)


@dataclass
class _Frame:
    image: np.ndarray  # (3, H, W) float32
    depth: np.ndarray  # (H, W) float32
    instances: np.ndarray  # (H, W) int64, 0 background, k + 1 for layout shape k
    boxes: np.ndarray  # (n, 4) float32, clipped to the image, rounded outwards
    counts: np.ndarray  # (n,) visible pixels per shape


def _render_frame(
    layout: SceneLayout,
    transforms: np.ndarray,
    camera: np.ndarray,
    depths: np.ndarray,
    planes: np.ndarray | None = None,
) -> _Frame:
    """Render one frame given the shape transforms ``(n, 3, 3)`` (canonical → pixels), the
    camera ``(3, 3)`` (frame-0 → this frame) and the shape depths ``(n,)`` in this frame.

    ``planes`` ``(n, 3)``: tilted cards (:mod:`.pose`), whose depth ``row · (x, y, 1)`` varies
    over the card; the cards are then drawn through a z-buffer (a tilted card may reach behind
    another at some pixels), always in front of the background."""
    h, w = layout.size
    n = len(layout.shapes)
    xs, ys = pixel_centres(w), pixel_centres(h)
    instances = np.zeros((h, w), dtype=np.int64)
    cam_scale = math.sqrt(abs(camera[0, 0] * camera[1, 1] - camera[0, 1] * camera[1, 0]))

    # Background; its canonical frame is the frame-0 pixel frame relative to the centre.
    bg = layout.background
    bg_inv = inverse_affine(camera)
    bg_inv[:2, 2] -= (0.5 * w, 0.5 * h)
    image = bg.texture.evaluate_grid(xs, ys, bg_inv)
    row = bg.inverse_depth_row(bg_inv)
    inv_depth = np.add.outer(row[1] * ys + row[2], row[0] * xs)
    np.clip(inv_depth, 1.0 / BACKGROUND_DEPTH[1], 1.0 / BACKGROUND_DEPTH[0], out=inv_depth)
    depth = np.divide(1.0 / cam_scale, inv_depth, out=inv_depth).astype(np.float32)

    zbuffer = np.full((h, w), np.inf, dtype=np.float32) if planes is not None else depth
    boxes = []
    for k, shape in enumerate(layout.shapes):
        x0, y0, x1, y1 = outline_box(shape.cls, transforms[k])
        boxes.append(
            (
                math.floor(min(max(x0, 0.0), w) * _BOX_STEP) / _BOX_STEP,
                math.floor(min(max(y0, 0.0), h) * _BOX_STEP) / _BOX_STEP,
                math.ceil(min(max(x1, 0.0), w) * _BOX_STEP) / _BOX_STEP,
                math.ceil(min(max(y1, 0.0), h) * _BOX_STEP) / _BOX_STEP,
            )
        )
    for k in np.argsort(-depths, kind="stable").tolist():  # painter's order: far to near
        shape = layout.shapes[k]
        x0, y0, x1, y1 = boxes[k]
        # Pixels whose centres can be inside: j + 0.5 ∈ [x0, x1], i + 0.5 ∈ [y0, y1].
        j0, j1 = math.ceil(x0 - 0.5), math.floor(x1 - 0.5) + 1
        i0, i1 = math.ceil(y0 - 0.5), math.floor(y1 - 0.5) + 1
        if j0 >= j1 or i0 >= i1:
            continue
        inv = inverse_affine(transforms[k])
        wx, wy = xs[j0:j1], ys[i0:i1]
        inside = inside_grid(shape.cls, inv, wx, wy)
        if planes is not None:
            row = planes[k]
            z = np.add.outer(row[1] * wy + row[2], row[0] * wx).astype(np.float32)
            inside &= z < zbuffer[i0:i1, j0:j1]
            np.copyto(zbuffer[i0:i1, j0:j1], z, where=inside)
        colours = shape.texture.evaluate_grid(wx, wy, inv)
        np.copyto(image[:, i0:i1, j0:j1], colours, where=inside)
        np.copyto(
            depth[i0:i1, j0:j1],
            depths[k] if planes is None else zbuffer[i0:i1, j0:j1],
            where=inside,
            casting="same_kind",
        )
        np.copyto(instances[i0:i1, j0:j1], k + 1, where=inside)
    np.clip(image, 0.0, 1.0, out=image)  # once for all surfaces
    counts = np.bincount(instances.reshape(-1), minlength=n + 1)[1:]
    boxes32 = np.array(boxes, dtype=np.float32).reshape(n, 4)
    return _Frame(image, depth, instances, boxes32, counts)


def _frame_transforms(
    layout: SceneLayout, camera: np.ndarray | None, motions: Sequence[ShapeMotion | None], t: int
) -> np.ndarray:
    """Shape transforms ``(n, 3, 3)`` (canonical → frame-t pixels); ``camera=None`` is I."""
    mats = np.stack([s.placement(t, m) for s, m in zip(layout.shapes, motions, strict=True)])
    return mats if camera is None else camera @ mats


def _visible_layout(
    seed: int, size: tuple[int, int], tilt: float = 0.0
) -> tuple[SceneLayout, _Frame, np.ndarray, np.ndarray, np.ndarray]:
    """Layout of scene ``seed`` restricted to the shapes visible at frame 0, with that frame,
    its shape transforms ``(n, 3, 3)``, depths ``(n,)`` (of the cards' centres) and depth
    planes ``(n, 3)`` (:mod:`.pose`); ``tilt``: the largest tilt of a card, degrees."""
    for attempt in range(_MAX_ATTEMPTS):
        layout = sample_layout(seed, size, attempt)
        n = len(layout.shapes)
        transforms = _frame_transforms(layout, None, [None] * n, 0)
        depths = np.array([s.depth for s in layout.shapes])
        planes = np.zeros((n, 3))
        planes[:, 2] = depths
        if tilt > 0:
            tilts = sample_tilts(seed, attempt, n, tilt)
            transforms = tilt_transforms(transforms, tilts)
            planes = depth_planes(transforms, tilts, depths, focal_length(size))
        frame = _render_frame(layout, transforms, IDENTITY, depths, planes if tilt > 0 else None)
        keep = frame.counts > 0
        if not keep.any():
            continue
        if not keep.all():  # dropping hidden shapes changes no pixel: just renumber instances
            lut = np.zeros(n + 1, dtype=np.int64)
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
            frame.instances = lut[frame.instances]
            frame.boxes, frame.counts = frame.boxes[keep], frame.counts[keep]
            shapes = tuple(s for s, k in zip(layout.shapes, keep.tolist(), strict=True) if k)
            layout = SceneLayout(layout.size, layout.background, shapes)
            transforms, depths, planes = transforms[keep], depths[keep], planes[keep]
        return layout, frame, transforms, depths, planes
    raise RuntimeError(f"no visible shape in {_MAX_ATTEMPTS} layouts of seed {seed} at {size}")


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered scene with exact annotations (``n`` annotated shapes).

    * ``image`` (3, H, W) float32 in [0, 1]
    * ``label``: class index of the dominant shape (largest visible area)
    * ``mask`` (H, W) int64: 0 background, class index + 1 on shape pixels
    * ``instances`` (H, W) int64: 0 background, k + 1 on pixels of shape k
    * ``depth`` (H, W) float32: depth of the visible surface
    * ``boxes`` (n, 4) float32: amodal xyxy boxes in pixel coordinates, clipped to the image
    * ``box_labels`` (n,) int64 class indices
    * ``keypoints`` (n, 5, 3) float32: (x, y, visible) for the centre and the outline points
      on rays at the shape's rotation + k·90°
    * ``shape_depth`` (n,) float32: depth of each shape (of its centre, when tilted)
    * ``transforms`` (n, 2, 3) float32: canonical outline → pixel coordinates of each shape
    * ``joints3d`` (n, 5, 3) float32: camera coordinates ``(X, Y, Z)`` of the keypoints
      (:mod:`.pose`; they project onto ``keypoints``), in depth units
    * ``parts`` (n, 4, 2) int64: ``(parent, child)`` keypoint indexes of each shape's skeleton
    * ``part_order`` (n, 4) int64: relative depth order ``r(z_p, z_c)`` ∈ {−1, 0, 1} per part
    * ``intrinsics`` (4,) float32: ``(fx, fy, cx, cy)`` of the camera, pixels
    """

    image: Tensor
    label: int
    mask: Tensor
    instances: Tensor
    depth: Tensor
    boxes: Tensor
    box_labels: Tensor
    keypoints: Tensor
    shape_depth: Tensor
    transforms: Tensor
    joints3d: Tensor
    parts: Tensor
    part_order: Tensor
    intrinsics: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """The dataset item: ``image``, ``label`` (0-d int64), ``mask``, ``instances``,
        ``depth``, ``boxes``, ``box_labels``, ``keypoints``, ``joints3d``, ``parts``,
        ``part_order``, ``intrinsics``."""
        return {
            "image": self.image,
            "label": torch.tensor(self.label, dtype=torch.int64),
            "mask": self.mask,
            "instances": self.instances,
            "depth": self.depth,
            "boxes": self.boxes,
            "box_labels": self.box_labels,
            "keypoints": self.keypoints,
            "joints3d": self.joints3d,
            "parts": self.parts,
            "part_order": self.part_order,
            "intrinsics": self.intrinsics,
        }


def _annotate(
    layout: SceneLayout,
    frame: _Frame,
    transforms: np.ndarray,
    depths: np.ndarray,
    planes: np.ndarray | None = None,
) -> Scene:
    """Turn a rendered frame into a ``Scene``; every layout shape is annotated. ``planes``:
    the cards' depth planes (:mod:`.pose`), ``None`` for fronto-parallel cards at ``depths``."""
    h, w = layout.size
    n = len(layout.shapes)
    classes = np.array([s.cls for s in layout.shapes], dtype=np.int64)

    # Keypoints: visible iff inside the image and the pixel containing it shows the instance.
    # Decided on the float32 coordinates that are handed out, so that users agree exactly.
    xy = CANONICAL_KEYPOINTS[classes] @ transforms[:, :2, :2].transpose(0, 2, 1)
    xy += transforms[:, None, :2, 2]
    xy = xy.astype(np.float32)
    cell = np.floor(xy).astype(np.int64)  # (n, 5, 2) pixel column, row
    inside = ((cell >= 0) & (cell < (w, h))).all(axis=2)
    np.maximum(cell, 0, out=cell)
    np.minimum(cell, (w - 1, h - 1), out=cell)
    shown = frame.instances[cell[..., 1], cell[..., 0]]
    visible = inside & (shown == np.arange(1, n + 1)[:, None])
    keypoints = np.concatenate([xy, visible[..., None].astype(np.float32)], axis=2)

    if planes is None:
        planes = np.zeros((n, 3))
        planes[:, 2] = depths
    joints = joints_3d(xy.astype(np.float64), planes, (h, w)).astype(np.float32)
    parts = PARTS[classes]
    class_lut = np.concatenate([[0], classes + 1])
    return Scene(
        image=torch.from_numpy(frame.image),
        label=int(classes[int(np.argmax(frame.counts))]),
        mask=torch.from_numpy(class_lut[frame.instances]),
        instances=torch.from_numpy(frame.instances),
        depth=torch.from_numpy(frame.depth),
        boxes=torch.from_numpy(frame.boxes),
        box_labels=torch.from_numpy(classes),
        keypoints=torch.from_numpy(keypoints),
        shape_depth=torch.from_numpy(depths.astype(np.float32)),
        transforms=torch.from_numpy(transforms[:, :2].astype(np.float32)),
        joints3d=torch.from_numpy(joints),
        parts=torch.from_numpy(parts),
        part_order=torch.from_numpy(depth_order(joints[..., 2], parts)),
        intrinsics=torch.from_numpy(intrinsics((h, w)).astype(np.float32)),
    )


def render_scene(
    seed: int, size: SizeLike = (128, 128), *, tilt: float = 0.0, fog: float = 0.0
) -> Scene:
    """Render scene ``seed`` at ``size`` (``H`` or ``(H, W)``). Shapes without any visible
    pixel are dropped from the scene; at least one shape is always visible.

    ``tilt``: turn each card out of the image plane by up to this many degrees (:mod:`.pose`;
    below 90); ``fog``: fade pixels with depth at this density per depth unit. Both 0: the
    fronto-parallel scenes, bit for bit."""
    check_scene_options(tilt, fog)
    layout, frame, transforms, depths, planes = _visible_layout(seed, as_size(size), tilt)
    if fog > 0:
        apply_fog(frame.image, frame.depth, fog)
    return _annotate(layout, frame, transforms, depths, planes)


@dataclass(frozen=True, eq=False)
class Clip:
    """A short clip of ``T`` frames of one scene with ``n`` shapes (fixed identities).

    * ``frames``: the per-frame ``Scene``s
    * ``images`` (T, 3, H, W) float32, ``masks`` / ``instances`` (T, H, W) int64,
      ``depths`` (T, H, W) float32, ``labels`` (T,) int64 (dominant class per frame)
    * ``boxes`` / ``keypoints``: per-frame lists of (n, 4) / (n, 5, 3) tensors
    * ``box_labels`` (n,) int64
    * ``flow`` (T, 2, H, W) float32 backward flow: pixel ``p`` of frame ``t`` shows the surface
      point that was at ``p + flow[t](p)`` in frame ``t − 1``; ``flow[0] = 0``
    * ``camera`` (T, 2, 3) float32: frame-0 → frame-t pixel coordinates of static points
    * ``shape_transforms`` (T, n, 2, 3) float32: canonical outline → frame-t pixels
    """

    frames: tuple[Scene, ...]
    images: Tensor
    masks: Tensor
    instances: Tensor
    depths: Tensor
    labels: Tensor
    boxes: list[Tensor]
    keypoints: list[Tensor]
    box_labels: Tensor
    flow: Tensor
    camera: Tensor
    shape_transforms: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """The dataset item; per-frame boxes and keypoints are stacked to (T, n, 4) and
        (T, n, 5, 3) since identities are fixed across frames."""
        return {
            "images": self.images,
            "labels": self.labels,
            "masks": self.masks,
            "instances": self.instances,
            "depths": self.depths,
            "flow": self.flow,
            "camera": self.camera,
            "boxes": torch.stack(self.boxes),
            "box_labels": self.box_labels,
            "keypoints": torch.stack(self.keypoints),
            "shape_transforms": self.shape_transforms,
        }


def render_clip(
    seed: int,
    num_frames: int = 4,
    size: SizeLike = (128, 128),
    *,
    camera_motion: bool = True,
    shape_motion: bool = True,
) -> Clip:
    """Render a ``num_frames`` clip of scene ``seed``: frame 0 is ``render_scene(seed, size)``,
    then the camera moves by a random similarity per frame (rotation ±2°, scale 0.98–1.02,
    translation ±3 px, about the image centre) and each shape by its own constant per-frame
    similarity about its centre (translation ±2 px, rotation ±3°, scale 0.97–1.03).

    Shapes keep their instance ids in every frame; a shape may be invisible in later frames
    (keypoints all invisible, box possibly empty after clipping). Depths scale with the
    camera zoom (``z / s_cam``), so the background stays behind every shape.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    hw = as_size(size)
    layout, first, first_transforms, base_depths, _ = _visible_layout(seed, hw)
    n = len(layout.shapes)
    cams, motions = sample_motion(seed, num_frames, n, hw, camera_motion, shape_motion)
    to_centre = np.array([[1.0, 0.0, 0.5 * hw[1]], [0.0, 1.0, 0.5 * hw[0]], [0.0, 0.0, 1.0]])

    frames: list[Scene] = []
    flows = np.zeros((num_frames, 2, *hw), dtype=np.float32)
    previous = np.concatenate([to_centre[None], first_transforms], axis=0)
    frames.append(_annotate(layout, first, first_transforms, base_depths))
    for t in range(1, num_frames):
        cam = cams[t]
        transforms = _frame_transforms(layout, cam, motions, t)
        depths = base_depths / math.sqrt(abs(cam[0, 0] * cam[1, 1] - cam[0, 1] * cam[1, 0]))
        frame = _render_frame(layout, transforms, cam, depths)
        frames.append(_annotate(layout, frame, transforms, depths))
        # Surface affines, background first: canonical → frame-t pixels.
        surfaces = np.concatenate([(cam @ to_centre)[None], transforms], axis=0)
        flows[t] = backward_flow(frame.instances, surfaces, previous)
        previous = surfaces

    all_transforms = [f.transforms for f in frames]
    return Clip(
        frames=tuple(frames),
        images=torch.stack([f.image for f in frames]),
        masks=torch.stack([f.mask for f in frames]),
        instances=torch.stack([f.instances for f in frames]),
        depths=torch.stack([f.depth for f in frames]),
        labels=torch.tensor([f.label for f in frames], dtype=torch.int64),
        boxes=[f.boxes for f in frames],
        keypoints=[f.keypoints for f in frames],
        box_labels=frames[0].box_labels,
        flow=torch.from_numpy(flows),
        camera=torch.from_numpy(cams[:, :2].astype(np.float32)),
        shape_transforms=torch.stack(all_transforms),
    )
