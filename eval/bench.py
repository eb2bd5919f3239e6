"""Benchmarks, each measured side by side with a peer in the same run.

``featcodec bench entropy``: a Gaussian latent ``(C, H, W)`` with scales log-uniform in
[0.11, 20] is coded by the project's path (:class:`codec.entropy.GaussianCoder`) and by
compressai's ``GaussianConditional`` with its default scale table
(``build_indexes`` + ``compress``; ``build_indexes`` + ``decompress``). Reported: median
encode and decode times, bytes, and the overhead of the bytes over the ideal code length
−Σlog₂p of the symbols under the exact (unquantized-scale) Gaussian.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import compressai
import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.google import get_scale_table
from torch import Tensor

from codec.entropy import GaussianCoder


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


def _median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), result


def bench_entropy(
    shape: tuple[int, int, int] = (256, 56, 56), repeat: int = 5, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Run the entropy-coding benchmark; returns the JSON-ready results."""
    torch.set_num_threads(threads)
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

    enc_ms, strings = _median_ms(lambda: ours.encode(y, scales, means), repeat)
    dec_ms, decoded = _median_ms(lambda: ours.decode(strings, scales, means), repeat)
    peer_enc_ms, peer_strings = _median_ms(run_peer_encode, repeat)
    peer_dec_ms, peer_decoded = _median_ms(run_peer_decode, repeat)

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
        "threads": threads,
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
        f"{report['threads']} thread(s), median of {report['repeat']}",
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
