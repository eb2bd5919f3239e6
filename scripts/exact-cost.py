"""What device-exact entropy parameters cost: the demo's codecs measured with the fixed-point
parameters (format version 2, the default) and with the float ones (the same streams otherwise,
``Codec.coding = FLOAT``), on the demo's test scenes, through real streams.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/exact-cost.py runs/demo-final [--threads 2]

Prints, per λ, bytes per image, bpp, accuracy and coding times of both, the BD-rate of the exact
parameters against the float ones (eval/bd.py), and how many latent elements get another scale
index or symbol; writes ``<run>/exact-cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from featcodec.codec.coding_mode import EXACT, FLOAT
from featcodec.codec.facade import Codec
from featcodec.eval.bd import Curve, bd_rate
from featcodec.eval.demo import DemoConfig
from featcodec.eval.rd import evaluate_codec


def _latent_agreement(codec: Codec, images: torch.Tensor) -> tuple[int, int, int]:
    """(elements, differing scale indexes, differing symbols) between the two parameter paths,
    on the base latent of ``images``."""
    base = codec.base
    with torch.no_grad():
        y = base.g_a(base.pad(codec.features(images)))
        z = base.h_a(y)
        medians = base.entropy_z._get_medians().reshape(1, -1, 1, 1)
        z_hat = torch.round(z - medians) + medians
        i_exact, mu_exact = base.coding_parameters(z_hat, None, EXACT)
        i_float, mu_float = base.coding_parameters(z_hat, None, FLOAT)
    s_exact, s_float = torch.round(y - mu_exact), torch.round(y - mu_float)
    return y.numel(), int((i_exact != i_float).sum()), int((s_exact != s_float).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a demo run folder (codec-lambda*.ckpt)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timing passes per mode (median)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DemoConfig()
    test = cfg.test_set()
    settings = {
        "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "images": len(test),
        "image_size": cfg.image_size,
    }
    print("settings:", json.dumps(settings))
    rows: dict[str, list[dict]] = {"exact": [], "float": []}
    agreement = []
    for ckpt in sorted(args.run.glob("codec-lambda*.ckpt")):
        lmbda = float(ckpt.stem.removeprefix("codec-lambda"))
        codec = Codec.from_checkpoint(ckpt).eval()
        for name, mode in (("exact", EXACT), ("float", FLOAT)):
            codec.coding = mode
            passes = [
                evaluate_codec(codec, test, name, f"λ={lmbda:g}") for _ in range(args.repeats)
            ]
            first = passes[0]
            assert all(r.bytes == first.bytes for r in passes)
            rows[name].append(
                {
                    "lambda": lmbda,
                    "bytes": first.bytes,
                    "bpp": first.bpp,
                    "accuracy": first.metrics["accuracy"],
                    "encode_ms": statistics.median(r.encode_ms for r in passes),
                    "decode_ms": statistics.median(r.decode_ms for r in passes),
                }
            )
        images = next(iter(test.batches(256)))["image"]
        n, idx, sym = _latent_agreement(codec, images)
        agreement.append(
            {"lambda": lmbda, "elements": n, "indexes_differ": idx, "symbols_differ": sym}
        )
    curves = {
        name: Curve(
            name,
            [r["bpp"] for r in sorted(rs, key=lambda r: r["bpp"])],
            [r["accuracy"] for r in sorted(rs, key=lambda r: r["bpp"])],
        )
        for name, rs in rows.items()
    }
    bd = bd_rate(curves["float"], curves["exact"])
    print(
        f"{'λ':>6} {'path':>6} {'bytes':>9} {'bpp':>8} {'accuracy':>9} {'enc ms':>8} {'dec ms':>8}"
    )
    for e, f in zip(rows["exact"], rows["float"], strict=True):
        for name, r in (("exact", e), ("float", f)):
            print(
                f"{r['lambda']:>6g} {name:>6} {r['bytes']:>9.2f} {r['bpp']:>9.4f} "
                f"{r['accuracy']:>9.4f} {r['encode_ms']:>9.2f} {r['decode_ms']:>9.2f}"
            )
        print(f"{'':>6} {'ratio':>6} {e['bytes'] / f['bytes']:>9.4f}")
    for a in agreement:
        print(
            f"λ={a['lambda']:g}: {a['indexes_differ']} of {a['elements']:,} scale indexes and "
            f"{a['symbols_differ']} symbols differ between the paths"
        )
    print(
        f"BD-rate of exact against float parameters: {bd.bd_rate:+.3f} % (overlap {bd.overlap:.2f})"
    )
    out = args.run / "exact-cost.json"
    out.write_text(
        json.dumps(
            {
                "settings": settings,
                "rows": rows,
                "agreement": agreement,
                "bd_rate_percent": bd.bd_rate,
                "overlap": bd.overlap,
                "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
        )
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
