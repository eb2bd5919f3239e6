"""Benchmarks, each measured side by side with a peer in the same run.

``featcodec bench entropy``: a Gaussian latent ``(C, H, W)`` with scales log-uniform in
[0.11, 20] is coded by the project's path (:class:`codec.entropy.GaussianCoder`) and by
compressai's ``GaussianConditional`` with its default scale table
(``build_indexes`` + ``compress``; ``build_indexes`` + ``decompress``). Reported: median
encode and decode times, bytes, and the overhead of the bytes over the ideal code length
−Σlog₂p of the symbols under the exact (unquantized-scale) Gaussian.

``featcodec bench motion``: throughput of :func:`codec.motion.warp` (see
:func:`bench_motion`) beside a bare ``grid_sample`` on a precomputed grid and a copy of the
same tensor, in fp32 and fp16, on the CPU and on CUDA when there is one.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import compressai
import torch
import torch.nn.functional as F
from compressai.entropy_models import GaussianConditional
from compressai.models.google import get_scale_table
from torch import Tensor

from featcodec.codec.entropy import GaussianCoder


def gaussian_latent(
    shape: tuple[int, int, int], seed: int = 0, scale_range: tuple[float, float] = (0.11, 20.0)
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, scales, means)`` of shape ``(1, *shape)``: ``y ~ N(means, scales²)``."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (math.log(s) for s in scale_range)
    scales = torch.exp(torch.empty(1, *shape).uniform_(lo, hi, generator=g))
    means = 4 * torch.rand(1, *shape, generator=g) - 2
    y = means + scales * torch.randn(1, *shape, generator=g)
    return y, scales, means


def ideal_bits(y: Tensor, scales: Tensor, means: Tensor, scale_min: float = 0.11) -> float:
    """−Σlog₂ P(round(y − μ)) under N(0, σ²) integrated over each unit bin, in float64."""
    v = torch.round(y - means).double().abs()
    s = scales.double().clamp_min(scale_min)
    normal = torch.distributions.Normal(0.0, 1.0)
    p = normal.cdf((0.5 - v) / s) - normal.cdf((-0.5 - v) / s)
    return float(-torch.log2(p.clamp_min(1e-300)).sum())


def thread_settings() -> dict[str, Any]:
    """The settings a CPU timing depends on: torch's threads and OpenMP's wait policy (two
    spinning threads on a busy 2-core machine made an encode 39× slower)."""
    return {
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }


def median_ms(
    fn: Callable[[], Any], repeat: int, sync: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    """Median wall time (ms) of ``repeat`` calls of ``fn`` after one warm-up call, and the last
    result; ``sync`` (e.g. ``torch.cuda.synchronize``) runs inside each timing, after ``fn``."""
    result = fn()  # warm-up
    if sync is not None:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), result


def bench_entropy(
    shape: tuple[int, int, int] = (256, 56, 56), repeat: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Run the entropy-coding benchmark with the caller's torch threads (``featcodec bench``
    pins them); returns the JSON-ready results, the settings among them."""
    y, scales, means = gaussian_latent(shape, seed)
    ideal = ideal_bits(y, scales, means)
    expected = torch.round(y - means) + means

    ours = GaussianCoder()
    t0 = time.perf_counter()
    ours.coding_tables()
    ours_setup = 1e3 * (time.perf_counter() - t0)
    peer = GaussianConditional(None)
    t0 = time.perf_counter()
    peer.update_scale_table(get_scale_table())
    peer_setup = 1e3 * (time.perf_counter() - t0)

    def run_peer_encode() -> list[bytes]:
        return peer.compress(y, peer.build_indexes(scales), means)

    def run_peer_decode() -> Tensor:
        return peer.decompress(peer_strings, peer.build_indexes(scales), means=means)

    enc_ms, strings = median_ms(lambda: ours.encode(y, scales, means), repeat)
    dec_ms, decoded = median_ms(lambda: ours.decode(strings, scales, means), repeat)
    peer_enc_ms, peer_strings = median_ms(run_peer_encode, repeat)
    peer_dec_ms, peer_decoded = median_ms(run_peer_decode, repeat)

    def row(enc: float, dec: float, data: list[bytes], out: Tensor, setup: float) -> dict:
        n = sum(len(s) for s in data)
        return {
            "encode_ms": enc,
            "decode_ms": dec,
            "bytes": n,
            "overhead_pct": 100 * (8 * n / ideal - 1),
            "exact": bool(torch.equal(out, expected)),
            "table_setup_ms": setup,
        }

    results = {
        "featcodec": row(enc_ms, dec_ms, strings, decoded, ours_setup),
        "compressai": row(peer_enc_ms, peer_dec_ms, peer_strings, peer_decoded, peer_setup),
    }
    return {
        "bench": "entropy",
        "shape": list(shape),
        "scale_range": [0.11, 20.0],
        **thread_settings(),
        "repeat": repeat,
        "ideal_bytes": ideal / 8,
        "results": results,
        "ratios": {
            "encode_time": enc_ms / peer_enc_ms,
            "decode_time": dec_ms / peer_dec_ms,
            "bytes": results["featcodec"]["bytes"] / results["compressai"]["bytes"],
        },
        "versions": {
            "torch": torch.__version__,
            "compressai": compressai.__version__,
            "python": platform.python_version(),
        },
        "machine": platform.processor() or platform.machine(),
    }


def format_entropy(report: dict[str, Any]) -> str:
    """The benchmark as a table."""
    c, h, w = report["shape"]
    lines = [
        f"entropy coding of a {c}×{h}×{w} Gaussian latent, scales log-uniform in [0.11, 20], "
        f"{report['threads']} thread(s), OMP_WAIT_POLICY={report['omp_wait_policy']}, "
        f"median of {report['repeat']}",
        f"ideal −Σlog₂p: {report['ideal_bytes']:,.0f} bytes",
        "",
        f"{'path':<12}{'encode ms':>11}{'decode ms':>11}{'bytes':>11}{'overhead':>10}{'exact':>7}",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"{name:<12}{r['encode_ms']:>11.1f}{r['decode_ms']:>11.1f}{r['bytes']:>11,}"
            f"{r['overhead_pct']:>9.3f}%{'yes' if r['exact'] else 'NO':>7}"
        )
    ratios = report["ratios"]
    lines += [
        "",
        f"featcodec / compressai: encode time {ratios['encode_time']:.2f}×, "
        f"decode time {ratios['decode_time']:.2f}×, bytes {ratios['bytes']:.4f}×",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# bench motion
# --------------------------------------------------------------------------------------------

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn: Callable[[], Any], repeat: int, device: torch.device, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in seconds; on CUDA the device is synchronized before the
    clock starts and before it stops, so queued kernels are counted where they run."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _test_flow(batch: int, size: int, device: torch.device) -> Tensor:
    """A smooth, sub-pixel, non-integer backward flow (batch, 2, size, size), float32: a small
    rotation + zoom + shift about the centre, as a latent-space affine motion would be."""
    from featcodec.codec.motion import affine_flow

    angle, zoom, c = math.radians(2.0), 1.02, size / 2
    a = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    a = a / zoom
    t = torch.tensor([c, c]) - a @ torch.tensor([c, c]) + torch.tensor([1.3, -0.7])
    theta = torch.cat((a, t[:, None]), dim=1).expand(batch, 2, 3).to(device)
    return affine_flow(theta, (size, size))


def _sampling_grid(flow: Tensor, dtype: torch.dtype) -> Tensor:
    """The normalized ``grid_sample`` grid (B, S, S, 2) that ``warp`` builds from ``flow``."""
    h, w = flow.shape[-2:]
    jx = torch.arange(w, device=flow.device, dtype=torch.float32)
    iy = torch.arange(h, device=flow.device, dtype=torch.float32)
    x = (2 * (flow[:, 0] + jx) + 1) / w - 1
    y = (2 * (flow[:, 1] + iy[:, None]) + 1) / h - 1
    return torch.stack((x, y), dim=-1).to(dtype)


def _motion_rows(
    ref: Tensor, flow: Tensor, repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The ``warp``, ``grid_sample`` and ``copy`` rows of one device and dtype (see
    :func:`bench_motion`), and notes on the ops that could not run."""
    from featcodec.codec.motion import warp

    grid = _sampling_grid(flow, ref.dtype)
    tensor_bytes = ref.numel() * ref.element_size()
    ops: dict[str, tuple[Callable[[], Any], int]] = {
        "warp": (
            lambda: warp(ref, flow, check=False),
            2 * tensor_bytes + flow.numel() * flow.element_size(),
        ),
        "grid_sample": (
            lambda: F.grid_sample(ref, grid, mode="bilinear", align_corners=False),
            2 * tensor_bytes + grid.numel() * grid.element_size(),
        ),
        "copy": (ref.clone, 2 * tensor_bytes),
    }
    batch = ref.shape[0]
    rows, notes = [], []
    for op, (fn, nbytes) in ops.items():
        try:
            seconds = _median_s(fn, repeat, ref.device)
        except RuntimeError as e:  # e.g. a kernel missing for this dtype and device
            notes.append({"op": op, "reason": " ".join(str(e).split())[:200]})
            continue
        rows.append(
            {
                "op": op,
                "ms": 1e3 * seconds,
                "tensors_per_s": batch / seconds,
                "gb_per_s": nbytes / seconds / 1e9,
                "bytes": nbytes,
            }
        )
    copy = next((r["gb_per_s"] for r in rows if r["op"] == "copy"), None)
    for r in rows:
        r["pct_of_copy"] = 100 * r["gb_per_s"] / copy if copy else None
    return rows, notes


def bench_motion(
    batch: int = 8,
    channels: int = 256,
    size: int = 56,
    repeat: int = 5,
    devices: Sequence[str] = ("cpu", "cuda"),
    dtypes: Sequence[str] = ("fp32", "fp16"),
    extra_rows: Sequence[dict[str, Any]] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Warp throughput: ``batch`` tensors of ``channels × size × size``, bilinear.

    For every device and dtype, three rows, each the median of ``repeat`` timed runs after
    two warm-up runs:

    * ``warp``: ``codec.motion.warp(reference, flow, check=False)``; the flow is float32
      (positions need it) and sub-pixel everywhere. Bytes counted: the reference read, the
      prediction written, the flow read (``B·2·S·S·4``). Not counted: the validity mask it
      also writes (1 byte per position) and its internal sampling grid and coordinates.
    * ``grid_sample``: ``F.grid_sample`` on a grid precomputed in the tensor's dtype, the
      floor for any warp. Bytes: reference read, output written, grid read.
    * ``copy``: ``reference.clone()``, the memory-bandwidth reference (on CUDA a
      device-to-device copy). Bytes: the reference read and the copy written.

    ``tensors_per_s = batch / time``, ``gb_per_s = bytes / time / 1e9``; ``pct_of_copy`` is a
    row's GB/s as a percentage of the copy's on the same device and dtype (the issue's target:
    GPU warp ≥ 60 %). CPU rows use the caller's torch threads. CUDA rows are skipped, with a
    note, when CUDA is not available. On the CPU, ``warp`` computes fp16 in float32 (see
    ``codec.motion._sample``), while ``grid_sample`` runs in fp16 directly.

    ``extra_rows``: HOOK for rows measured elsewhere, kept as given and printed with the rest
    (to come: the whole P-frame encode/decode of ``codec/video.py``). Each is a dict with at
    least ``op``, ``device``, ``dtype`` and ``ms``; ``tensors_per_s``, ``gb_per_s``,
    ``bytes`` and ``pct_of_copy`` are optional.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            skipped.append({"device": name, "reason": "CUDA is not available"})
            continue
        g = torch.Generator(device=device).manual_seed(seed)
        flow = _test_flow(batch, size, device)
        for label in dtypes:
            ref = torch.randn(batch, channels, size, size, generator=g, device=device)
            found, notes = _motion_rows(ref.to(DTYPES[label]), flow, repeat)
            rows += [{"device": name, "dtype": label, **r} for r in found]
            skipped += [{"device": name, "dtype": label, **n} for n in notes]
    rows += [{"source": "extra", **r} for r in extra_rows]  # HOOK: P-frame encode/decode
    return {
        "bench": "motion",
        "shape": [batch, channels, size, size],
        **thread_settings(),
        "repeat": repeat,
        "warmup": 2,
        "rows": rows,
        "skipped": skipped,
        "target_pct_of_copy": 60.0,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def format_motion_bench(report: dict[str, Any]) -> str:
    """The warp benchmark as a table, one line per row, skipped rows as notes."""
    b, c, h, w = report["shape"]
    lines = [
        f"warp of {b}×{c}×{h}×{w} tensors (bilinear, float32 flow), {report['threads']} CPU "
        f"thread(s), OMP_WAIT_POLICY={report['omp_wait_policy']}, median of "
        f"{report['repeat']} after {report['warmup']} warm-up runs",
        "",
        f"{'device':<8}{'dtype':<6}{'op':<13}{'ms/batch':>10}{'tensors/s':>12}{'GB/s':>9}"
        f"{'% of copy':>11}",
    ]

    def cell(value: Any, fmt: str, width: int) -> str:
        return f"{value:>{width}{fmt}}" if isinstance(value, int | float) else f"{'-':>{width}}"

    for r in report["rows"]:
        lines.append(
            f"{r['device']:<8}{r['dtype']:<6}{r['op']:<13}{cell(r.get('ms'), '.2f', 10)}"
            f"{cell(r.get('tensors_per_s'), ',.1f', 12)}{cell(r.get('gb_per_s'), '.2f', 9)}"
            f"{cell(r.get('pct_of_copy'), '.0f', 10)}{'%' if r.get('pct_of_copy') else ' '}"
        )
    for s in report["skipped"]:
        what = " ".join(s[k] for k in ("device", "dtype", "op") if k in s)
        lines.append(f"({what} skipped: {s['reason']})")
    return "\n".join(lines)


def bench_pframe(
    devices: Sequence[str] = ("cpu", "cuda"), size: int = 224, repeat: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows for :func:`bench_motion`: one whole P-frame of :mod:`codec.video`, encoded and
    decoded, per device (CUDA skipped when absent), fp32.

    The model is the default architecture (``scene_resnet10`` split after ``layer2``, stride 8,
    with its hyperprior base and a default :class:`~codec.pframe.PFrameCodec`), random weights:
    timing does not depend on training. The frame is ``size × size``; its motion is a known
    affine (metadata: a 5.3 px translation and 1° rotation). ``encode``: front, motion side
    information, warp of the reference, P-frame analysis and entropy coding (also the
    reconstruction the next frame needs). ``decode``: motion side information, warp, entropy
    decoding, synthesis and the back of the task network. Median of ``repeat`` runs after a
    warm-up.
    """
    from featcodec.codec.facade import Codec, default_arch
    from featcodec.codec.video import VideoCodec

    rows: list[dict[str, Any]] = []
    torch.manual_seed(seed)
    codec = VideoCodec(Codec.build(default_arch())).eval()
    frames = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    angle = math.radians(1.0)
    theta = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 5.3], [math.sin(angle), math.cos(angle), -2.1]]
    )
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            continue
        codec.to(device)
        enc_ms, dec_ms, nbytes = _pframe_times(codec, frames.to(device), theta, repeat)
        for op, ms in (("P-frame encode", enc_ms), ("P-frame decode", dec_ms)):
            rows.append({"op": op, "device": name, "dtype": "fp32", "ms": ms, "bytes": nbytes})
    return rows


@torch.no_grad()
def _pframe_times(codec: Any, x: Tensor, theta: Tensor, repeat: int) -> tuple[float, float, int]:
    """Median encode and decode times (ms) of frame ``x[1]`` as a P-frame on ``x[0]``, and its
    bytes (motion side information included)."""
    from featcodec.codec.motion_side_info import AffineMotion

    size = tuple(x.shape[-2:])
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    reference = codec.intra.features(x[:1])

    def encode() -> tuple[bytes, bytes]:
        f = codec.intra.features(x[1:])
        motion = codec.coder.quantize(AffineMotion(theta))
        prediction, mask = codec.predict(reference, motion, size)
        code = codec.inter.compress(f, prediction, mask)
        sync()
        return codec.coder.encode(motion), code.strings[0]

    enc_ms, (side, string) = median_ms(encode, repeat)

    def decode() -> Tensor:
        motion = codec.coder.decode(side, size)
        prediction, mask = codec.predict(reference, motion, size)
        out = codec.intra.back(codec.inter.decompress([string], prediction, mask))
        sync()
        return out

    dec_ms, _ = median_ms(decode, repeat)
    return enc_ms, dec_ms, len(side) + len(string)
