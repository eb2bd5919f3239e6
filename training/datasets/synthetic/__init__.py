"""Procedurally generated, seeded, deterministic synthetic scenes and short clips.

A scene is a textured background plus 1–4 shapes from ``SHAPE_CLASSES``. Every surface lives in
its own *canonical frame* and is placed in the image by an affine map ``T`` (canonical → pixel
coordinates), so any frame of any clip is rendered by mapping each pixel centre back with
``T⁻¹`` and evaluating the surface there::

    shape k at frame t:   T_k(t) = C(t) · P_k(t)        canonical outline, unit circumradius
    background at t:      T_bg(t) = C(t) · Translate(image centre)

``C(t)`` is the camera (frame 0 → frame t, ``C(0) = I``) and ``P_k(t)`` places shape ``k``
(centre, apparent radius, rotation) at time ``t``. Everything below follows from that:

* Outlines are a circle or star-shaped polygons around the origin (radial function ``r(φ)``
  in ``outline_radius``). For speed, the inside test writes each polygon as a union of
  overlapping convex pieces, whose half-plane values are linear in the pixel coordinates:
  broadcast sums, no trigonometry, and only over the pixels of the shape's box.
* Textures are functions of continuous canonical coordinates (a colour gradient plus three
  sinusoid gratings), so a surface looks the same under any affine map. On a pixel grid they
  separate into row and column factors (``Texture.evaluate_grid``). Shape colours are random,
  independent of the class.
* Perspective: physical size ``s ∈ [0.6, 1.2]``, depth ``z ∈ [2, 5.9]``, apparent circumradius
  ``R = f·s/z`` with ``f = 0.5·min(H, W)``. The background is a ground-plane-like depth in
  ``[6, 10]`` (inverse depth linear in the image), always farther than every shape.
* Pixel ``(i, j)`` has centre ``(x, y) = (j + 0.5, i + 0.5)``; it belongs to a shape if its
  centre is inside (no anti-aliasing), shapes are painted far to near.
* Boxes are the amodal extent of the analytic outline (polygon vertices or ellipse), clipped to
  the image, in the same continuous coordinates, rounded outwards to 1/1024 px (exact in
  float32, so a box never shrinks). Keypoints are the centre and the outline points on the
  rays at the shape's rotation + k·90°.
* Backward flow of frame ``t``: a pixel ``p`` showing surface ``s`` shows the canonical point
  ``q = T_s(t)⁻¹ p``, which was at ``p' = T_s(t−1) q`` in frame ``t − 1``; ``flow = p' − p``.

Everything is derived from ``numpy.random.Generator(PCG64(SeedSequence([seed, ...])))``; the
same ``(seed, size)`` always gives the same scene, and frame 0 of ``render_clip(seed)`` is
``render_scene(seed)``.

Modules, each using only those before it::

    seeds      seeded random streams, item seeds           geometry  affine maps, pixel grid
    shapes     canonical outlines: inside tests, keypoints, boxes, amodal masks
    motion     camera and shape motion of a clip, backward flow
    layout     textures, shapes at frame 0, background: sample_layout(seed) ─┐
    render     frames, Scene / Clip with their annotations  ◀────────────────┘
               render_scene(seed), render_clip(seed) ─┐
    data       SyntheticScenes / SyntheticClips and their data modules  ◀──┘
               (batched by training.datasets.batch: collate_scenes, collate_clips)
"""

from __future__ import annotations

from featcodec.training.datasets.batch import collate_clips, collate_scenes
from featcodec.training.datasets.synthetic.data import (
    SyntheticClips,
    SyntheticClipsDataModule,
    SyntheticScenes,
    SyntheticScenesDataModule,
)
from featcodec.training.datasets.synthetic.geometry import SizeLike
from featcodec.training.datasets.synthetic.layout import (
    Background,
    SceneLayout,
    ShapeSpec,
    Texture,
    sample_layout,
)
from featcodec.training.datasets.synthetic.motion import ShapeMotion
from featcodec.training.datasets.synthetic.render import Clip, Scene, render_clip, render_scene
from featcodec.training.datasets.synthetic.seeds import item_seed
from featcodec.training.datasets.synthetic.shapes import (
    NUM_KEYPOINTS,
    SHAPE_CLASSES,
    amodal_mask,
    outline_inside,
    outline_radius,
    outline_vertices,
)

__all__ = [
    "NUM_KEYPOINTS",
    "SHAPE_CLASSES",
    "Background",
    "Clip",
    "Scene",
    "SceneLayout",
    "ShapeMotion",
    "ShapeSpec",
    "SizeLike",
    "SyntheticClips",
    "SyntheticClipsDataModule",
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "Texture",
    "amodal_mask",
    "collate_clips",
    "collate_scenes",
    "item_seed",
    "outline_inside",
    "outline_radius",
    "outline_vertices",
    "render_clip",
    "render_scene",
    "sample_layout",
]
