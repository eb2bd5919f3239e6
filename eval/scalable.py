"""``featcodec experiment scalable``: the scalable-coding paper's two claims on synthetic scenes.

de Andrade & Bajić, "Towards Task-Compatible Compressible Representations" claim that

(a) a small reconstruction reward (β > 0) on the base layer makes its preview a much better
    picture of the input at equal base rate, while the base task's BD-rate moves little;
(b) an enhancement layer conditioned on the base needs fewer bits than the same layer without
    it (standalone) for the same reconstruction, and base + enhancement costs less than the
    base plus a separate image codec (the standalone layer).

This runner trains what it needs on the embedded scenes (the task network, base codecs at
several λ for each β, conditional and standalone enhancement layers at several λ_e on one
base), measures every point from real streams, and prints the BD-rates. Results go to
``<out>/scalable.json`` and ``<out>/rd.json`` (the ``featcodec eval rd`` format).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from featcodec.codec.bitstream import unpack
from featcodec.codec.facade import Codec
from featcodec.codec.files import atomic_write
from featcodec.eval.bd import Curve, bd_rate
from featcodec.eval.data import EvalData
from featcodec.eval.metrics import PSNR
from featcodec.eval.rd import evaluate_codec
from featcodec.eval.results import RDRow, software_versions, write_results
from featcodec.eval.sweep import SceneRun, fit_or_reuse, lambda_sweep
from featcodec.training import EnhancementModule

log = logging.getLogger(__name__)
"""Progress lines (the CLI shows them; a library user configures logging)."""


@dataclass
class ScalableConfig(SceneRun):
    """What the experiment trains. The defaults take about an hour on 2 shared CPU cores (the
    enhancement layers most of it); ``resume`` keeps what an earlier run already trained."""

    out: str = "runs/scalable"
    betas: tuple[float, ...] = (0.0, 0.001, 0.01)
    enh_lambdas: tuple[float, ...] = (0.001, 0.004, 0.016)
    enh_epochs: int = 3
    base_beta: float = 0.01
    enh_base_lambda: float = 1.0
    task_checkpoint: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if 0.0 not in self.betas or len(self.betas) < 2:
            raise ValueError(f"betas must hold 0 (the plain base) and a β > 0, got {self.betas}")
        if self.base_beta not in self.betas or self.enh_base_lambda not in self.lambdas:
            raise ValueError(
                f"the enhancement's base (β={self.base_beta:g}, λ={self.enh_base_lambda:g}) "
                f"is not among the trained ones (betas {self.betas}, lambdas {self.lambdas})"
            )

    @classmethod
    def quick(cls, out: str) -> ScalableConfig:
        """A seconds-long configuration for tests."""
        return cls(
            out=out,
            image_size=32,
            train_size=48,
            val_size=8,
            test_size=8,
            batch_size=16,
            task_epochs=1,
            codec_epochs=1,
            lambdas=(2.0, 0.5),
            betas=(0.0, 0.01),
            enh_lambdas=(0.004, 0.016),
            enh_epochs=1,
            enh_base_lambda=2.0,
            N=16,
            M=16,
            progress=False,
        )


@torch.no_grad()
def code_layers(codec: Codec, images: Tensor, totals: dict[str, int]) -> Tensor:
    """Code each image ``(B, 3, H, W)`` through a real stream of both layers, adding each
    layer's bytes to ``totals`` (``header``, ``base``, ``enhancement``); returns the decoded
    enhancement outputs ``(B, C, H, W)``."""
    outputs = []
    for x in images:
        stream = codec.encode(x)
        for k, v in unpack(stream).layer_bytes().items():
            totals[k] = totals.get(k, 0) + v
        decoded = codec.decode(stream)
        if decoded.enhanced is None:
            raise ValueError("the codec has no enhancement layer")
        outputs.append(decoded.enhanced)
    return torch.cat(outputs)


@torch.no_grad()
def evaluate_layers(codec: Codec, data: EvalData, name: str, point: str) -> dict[str, float]:
    """Mean bytes per image of each layer (real streams) and the PSNR of the enhancement."""
    psnr = PSNR()
    totals = {"header": 0, "base": 0, "enhancement": 0}
    pixels = 0
    n = 0
    for batch in data.batches(64):
        x = batch["image"]
        psnr.update(code_layers(codec, x, totals).clamp(0, 1), x)
        pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        n += x.shape[0]
    return {
        "codec": name,
        "point": point,
        "bpp_enhancement": 8 * totals["enhancement"] / pixels,
        "bpp_base": 8 * (totals["header"] + totals["base"]) / pixels,
        "psnr": psnr.compute(),
        "images": n,
    }


def run_scalable(cfg: ScalableConfig) -> dict[str, Any]:
    """Train, code and measure; returns what is written to ``<out>/scalable.json``."""
    start = time.perf_counter()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, verbose=False)
    data = cfg.data()
    if cfg.task_checkpoint is None:
        log.info("[1/4] the task network")
        task_ckpt = cfg.task_network(data, root, cfg.resume)
    else:
        task_ckpt = Path(cfg.task_checkpoint)

    bases: dict[tuple[float, float], Path] = {}
    for beta in cfg.betas:
        sweep = lambda_sweep(
            data,
            root,
            f"base-beta{beta:g}",
            cfg.lambdas,
            cfg.codec_epochs,
            cfg.finetune_epochs,
            progress=cfg.progress,
            resume=cfg.resume,
            label=f"[2/4] β={beta:g}: ",
            num_classes=data.num_classes,
            task_checkpoint=str(task_ckpt),
            N=cfg.N,
            M=cfg.M,
            attention=False,
            lr=3e-3,
            cache_frozen=True,
            preview=True,
            beta=beta,
        )
        bases.update({(beta, lmbda): ckpt for lmbda, ckpt in sweep})

    test = cfg.test_set()
    log.info("[3/4] measuring the base codecs")
    rows: list[RDRow] = []
    for (beta, lmbda), ckpt in bases.items():
        codec = Codec.from_checkpoint(ckpt)
        name, point = f"base β={beta:g}", f"λ={lmbda:g}"
        rows.append(evaluate_codec(codec, test, name, point, lmbda, str(ckpt)))

    base_ckpt = bases[(cfg.base_beta, cfg.enh_base_lambda)]
    layers: list[dict[str, float]] = []
    for standalone in (False, True):
        kind = "standalone" if standalone else "conditional"
        for lam in cfg.enh_lambdas:
            log.info(f"[4/4] enhancement ({kind}), λ_e={lam:g}")
            ckpt = root / f"enh-{kind}-lambda{lam:g}.ckpt"
            fit_or_reuse(
                lambda standalone=standalone, lam=lam: EnhancementModule(
                    str(base_ckpt),
                    N=cfg.N,
                    M=cfg.M,
                    downsample=3,
                    hyper_downsample=1,
                    standalone=standalone,
                    lmbda=lam,
                    lr=2e-3,
                ),
                data,
                ckpt,
                cfg.enh_epochs,
                root,
                progress=cfg.progress,
                resume=cfg.resume,
            )
            codec = Codec.from_checkpoint(ckpt)
            layers.append(evaluate_layers(codec, test, f"enhancement ({kind})", f"λ_e={lam:g}"))

    write_results(
        root / "rd.json",
        rows,
        task="classification",
        metric="accuracy",
        dataset=test.info,
        software=software_versions(),
    )
    claims = _claims(rows, layers, cfg)
    results = {
        "config": asdict(cfg),
        "base": [r.as_dict() for r in rows],
        "enhancement": layers,
        "claims": claims,
        "total_s": time.perf_counter() - start,
    }
    atomic_write(root / "scalable.json", json.dumps(results, indent=2))
    return results


def _curve(name: str, rows: list[Any], rate: str, metric: str) -> Curve:
    get = (lambda r, k: r[k]) if isinstance(rows[0], dict) else (lambda r, k: _field(r, k))
    pts = sorted((get(r, rate), get(r, metric)) for r in rows)
    return Curve(name, [p[0] for p in pts], [p[1] for p in pts])


def _field(row: RDRow, key: str) -> float:
    return row.metrics[key] if key in row.metrics else getattr(row, key)


def _claims(rows: list[RDRow], layers: list[dict[str, float]], cfg: ScalableConfig) -> dict:
    plain = [r for r in rows if r.codec == "base β=0"]
    reward: list[dict[str, Any]] = []
    for beta in sorted(b for b in cfg.betas if b > 0):
        ours = [r for r in rows if r.codec == f"base β={beta:g}"]
        name = f"β={beta:g}"
        pairs = list(zip(plain, ours, strict=True))
        reward.append(
            {
                "beta": beta,
                "psnr_gain_db": [b.metrics["psnr"] - a.metrics["psnr"] for a, b in pairs],
                "rate_ratio": [b.bpp / a.bpp for a, b in pairs],
                "preview_bd_rate": bd_rate(
                    _curve("β=0", plain, "bpp", "psnr"), _curve(name, ours, "bpp", "psnr")
                ).as_dict(),
                "task_bd_rate": bd_rate(
                    _curve("β=0", plain, "bpp", "accuracy"), _curve(name, ours, "bpp", "accuracy")
                ).as_dict(),
            }
        )
    cond = [r for r in layers if "conditional" in r["codec"]]
    alone = [r for r in layers if "standalone" in r["codec"]]
    enh = bd_rate(
        _curve("standalone", alone, "bpp_enhancement", "psnr"),
        _curve("conditional", cond, "bpp_enhancement", "psnr"),
    )
    total = [{**r, "bpp_total": r["bpp_base"] + r["bpp_enhancement"]} for r in cond]
    separate = [{**r, "bpp_total": r["bpp_base"] + r["bpp_enhancement"]} for r in alone]
    totals = bd_rate(
        _curve("base + standalone", separate, "bpp_total", "psnr"),
        _curve("base + enhancement", total, "bpp_total", "psnr"),
    )
    return {
        "a": reward,
        "b_enhancement_bd_rate": enh.as_dict(),
        "b_total_bd_rate": totals.as_dict(),
    }


def format_claims(results: dict[str, Any]) -> str:
    """The experiment's tables as text."""
    lines = [f"{'base':<12}{'point':>9}{'bpp':>9}{'accuracy':>10}{'preview PSNR':>14}"]
    for r in results["base"]:
        psnr = r["metrics"].get("psnr", math.nan)
        lines.append(
            f"{r['codec']:<12}{r['point']:>9}{r['bpp']:>9.4f}"
            f"{r['metrics']['accuracy']:>10.3f}{psnr:>14.2f}"
        )
    lines += ["", f"{'enhancement':<26}{'point':>11}{'bpp enh':>9}{'bpp base':>10}{'PSNR':>8}"]
    for r in results["enhancement"]:
        lines.append(
            f"{r['codec']:<26}{r['point']:>11}{r['bpp_enhancement']:>9.4f}"
            f"{r['bpp_base']:>10.4f}{r['psnr']:>8.2f}"
        )
    c = results["claims"]

    def bd(d: dict) -> str:
        value = "n/a" if d["bd_rate"] is None else f"{d['bd_rate']:+.1f} %"
        return value + (f"  ({'; '.join(d['notes'])})" if d["notes"] else "")

    for a in c["a"]:
        gains = ", ".join(f"{g:+.2f}" for g in a["psnr_gain_db"])
        ratios = ", ".join(f"{r:.2f}x" for r in a["rate_ratio"])
        lines += [
            "",
            f"(a) β={a['beta']:g} vs β=0, at each λ: preview PSNR {gains} dB; base rate {ratios}",
            f"    BD-rate of the preview (bpp vs PSNR): {bd(a['preview_bd_rate'])}",
            f"    BD-rate of the base task (bpp vs accuracy): {bd(a['task_bd_rate'])}",
        ]
    lines += [
        "",
        f"(b) enhancement bits, conditional vs standalone: {bd(c['b_enhancement_bd_rate'])}",
        f"    base + enhancement vs base + separate codec: {bd(c['b_total_bd_rate'])}",
    ]
    return "\n".join(lines)
