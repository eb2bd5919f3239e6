"""Inter-frame coding measured on clips: P-frame against I-frame bits at the task's accuracy.

Every clip is coded three ways from the same frames, all rates from the real streams:

* ``video``: I-frame every ``intra_period`` frames, P-frames in between (motion side
  information included in their bytes);
* ``intra``: every frame an I-frame (the base layer alone) — the reference;
* ``no-motion`` (optional): the same P-frame codec with zero motion, to see what the motion
  buys.

Reported per frame type: mean bytes, bits per input pixel, and the task metric against the
frames' ground truth, plus the P-to-I byte ratio on the same frames (the issue's target:
P-frames at most 40 % of the I-frames' bits at equal accuracy).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from codec.edge_motion import camera_affine
from codec.video import VideoCodec
from eval.metrics import task_metric
from models.heads import task_of
from training.pframe_module import frame_batch

MOTION_SOURCES_EVAL = ("flow", "affine", "dis-flow", "dis-affine", "none")


@dataclass
class FrameStats:
    """What one coding of the clips gave, per frame type."""

    name: str
    frames: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, float] = field(default_factory=dict)
    motion_bytes: float = 0.0
    bpp: dict[str, float] = field(default_factory=dict)
    metric: dict[str, float] = field(default_factory=dict)


def _clip_motion(clip: dict[str, Any], source: str) -> dict[str, Any]:
    if source == "flow":
        return {"flows": clip["flow"]}
    if source == "affine":
        T = clip["images"].shape[0]
        eye = torch.eye(2, 3)
        return {
            "affines": torch.stack([eye, *[camera_affine(clip["camera"], t) for t in range(1, T)]])
        }
    return {}


def _code(
    codec: VideoCodec, clips: Any, intra_period: int, motion: str, name: str, progress: bool
) -> FrameStats:
    task = task_of(codec.intra.arch)
    metrics = {"I": task_metric(task), "P": task_metric(task)}
    sizes: dict[str, list[int]] = {"I": [], "P": []}
    motion_bytes: list[int] = []
    pixels = 0
    for index in tqdm(range(len(clips)), desc=name, disable=not progress, leave=False):
        clip = clips[index]
        images = clip["images"]
        pixels = images.shape[-2] * images.shape[-1]
        data = codec.encode_sequence(images, intra_period, motion, **_clip_motion(clip, motion))
        decoded = codec.decode_sequence(data)
        truth = {k: clip[k][None] for k in ("labels", "masks", "depths")}  # a batch of one clip
        for t, frame in enumerate(decoded.frames):
            assert frame is not None
            sizes[frame.kind].append(frame.bytes)
            if frame.kind == "P":
                motion_bytes.append(frame.motion_bytes)
            metrics[frame.kind].update(frame.output, frame_batch(truth, t))
    stats = FrameStats(name)
    for kind, values in sizes.items():
        if values:
            stats.frames[kind] = len(values)
            stats.bytes[kind] = statistics.fmean(values)
            stats.bpp[kind] = 8 * stats.bytes[kind] / pixels
            stats.metric[kind] = metrics[kind].compute()
    stats.motion_bytes = statistics.fmean(motion_bytes) if motion_bytes else 0.0
    return stats


@torch.no_grad()
def evaluate_video(
    codec: VideoCodec,
    clips: Any,
    intra_period: int,
    motion: str = "flow",
    no_motion: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Code ``clips`` (a dataset of ``SyntheticClips`` items) as video, as all-intra and (with
    ``no_motion``) as video without motion; returns the JSON-ready report."""
    if motion not in MOTION_SOURCES_EVAL:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTION_SOURCES_EVAL}")
    codec = codec.eval()
    runs = [_code(codec, clips, intra_period, motion, "video", progress)]
    runs.append(_code(codec, clips, 1, motion, "intra", progress))
    if no_motion:
        runs.append(_code(codec, clips, intra_period, "none", "no-motion", progress))
    video, intra = runs[0], runs[1]
    metric_name = task_metric(task_of(codec.intra.arch)).name
    return {
        "metric": metric_name,
        "intra_period": intra_period,
        "motion": motion,
        "clips": len(clips),
        "runs": [asdict(r) for r in runs],
        "p_over_i_bytes": video.bytes["P"] / video.bytes["I"],
        "p_over_intra_same_frames": video.bytes["P"] / intra.bytes["I"],
        "p_metric": video.metric["P"],
        "intra_metric": intra.metric["I"],
    }


def format_video(report: dict[str, Any]) -> str:
    """A text table of :func:`evaluate_video`'s report."""
    metric = report["metric"]
    lines = [f"{'coding':<10} {'type':<4} {'frames':>6} {'bytes':>8} {'bpp':>7} {metric:>9}"]
    for run in report["runs"]:
        for kind in ("I", "P"):
            if kind in run["frames"]:
                lines.append(
                    f"{run['name']:<10} {kind:<4} {run['frames'][kind]:>6} "
                    f"{run['bytes'][kind]:>8.1f} {run['bpp'][kind]:>7.4f} "
                    f"{run['metric'][kind]:>9.4f}"
                )
    video = report["runs"][0]
    lines.append(
        f"P-frames: {report['p_over_i_bytes']:.1%} of the I-frames' bytes "
        f"({video['motion_bytes']:.1f} bytes of motion side information each); "
        f"{metric} {report['p_metric']:.4f} vs {report['intra_metric']:.4f} all-intra"
    )
    return "\n".join(lines)
