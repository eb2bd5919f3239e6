"""The README's workflows end to end: LightningCLI configs, the demo, the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from featcodec.cli import main
from featcodec.codec.bitstream import unpack
from featcodec.codec.facade import Codec
from featcodec.codec.video import VideoCodec
from featcodec.eval.results import load_results
from featcodec.training.datasets import render_clip

ROOT = Path(__file__).resolve().parents[1]


def _small_config(name: str, tmp: Path, **model: object) -> Path:
    """The shipped config with its paths under ``tmp`` and a few-step budget."""
    cfg = yaml.safe_load((ROOT / "configs" / name).read_text())
    cfg["trainer"].update(max_steps=3, max_epochs=1, limit_val_batches=1, enable_progress_bar=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp / "runs")
    cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp / Path(name).stem / "ckpt")
    cfg["data"]["init_args"].update(image_size=32, train_size=24, val_size=8, batch_size=8)
    cfg["model"]["init_args"].update(model)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_train_configs_with_lightning_cli(tmp_path: Path) -> None:
    assert main(["train", "--config", str(_small_config("tasknet.yaml", tmp_path))]) == 0
    task_ckpt = tmp_path / "tasknet" / "ckpt" / "last.ckpt"
    assert torch.load(task_ckpt, weights_only=True)["featcodec"]["kind"] == "task"

    quick = _small_config("quickstart.yaml", tmp_path, task_checkpoint=str(task_ckpt), N=16, M=16)
    # a command-line override wins over the file
    assert main(["train", "--config", str(quick), "--model.lmbda", "0.25"]) == 0
    ckpt = tmp_path / "quickstart" / "ckpt" / "last.ckpt"
    loaded = torch.load(ckpt, weights_only=True)
    assert loaded["hyper_parameters"]["lmbda"] == 0.25
    # running a config again replaces last.ckpt (no last-v1.ckpt beside a stale one)
    assert main(["train", "--config", str(quick), "--model.lmbda", "0.5"]) == 0
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["lmbda"] == 0.5
    codec = Codec.from_checkpoint(ckpt)
    assert codec.arch["codec"]["N"] == 16
    assert codec.decode(codec.encode(torch.rand(3, 32, 32))).output.shape == (1, 5)
    assert list((tmp_path / "runs").glob("quickstart/**/events.out.tfevents.*"))

    # second stage: the enhancement layer in front of that frozen base
    enh = _small_config("enhancement.yaml", tmp_path, base_checkpoint=str(ckpt), N=16, M=16)
    assert main(["train", "--config", str(enh)]) == 0
    scalable = Codec.from_checkpoint(tmp_path / "enhancement" / "ckpt" / "last.ckpt")
    assert scalable.fingerprint == codec.fingerprint and scalable.enhancement is not None
    assert scalable.decode(scalable.encode(torch.rand(3, 32, 32))).enhanced.shape == (1, 3, 32, 32)

    # the P-frame codec behind the same base, on clips, with DIS-estimated motion
    pframe = _small_config(
        "pframe.yaml", tmp_path, base_checkpoint=str(ckpt), N=16, M=16, motion="dis-flow"
    )
    assert main(["train", "--config", str(pframe)]) == 0
    video = VideoCodec.from_checkpoint(tmp_path / "pframe" / "ckpt" / "last.ckpt")
    assert video.intra.fingerprint == codec.fingerprint
    clip = render_clip(1, 3, 32).as_dict()
    frames = video.decode_sequence(video.encode_sequence(clip["images"], 3, "dis-flow")).frames
    assert [f.kind for f in frames] == ["I", "P", "P"]


@pytest.mark.slow
def test_a_config_with_the_old_class_paths_still_trains(tmp_path: Path) -> None:
    config = _small_config("tasknet.yaml", tmp_path)
    old = config.read_text().replace("featcodec.training.", "training.")
    assert "class_path: training.TaskModule" in old
    config.write_text(old)
    with pytest.warns(DeprecationWarning, match="old paths"):
        assert main(["train", "--config", str(config)]) == 0
    assert (tmp_path / "tasknet" / "ckpt" / "last.ckpt").is_file()
    assert config.read_text() == old  # the user's file is left as it was


def test_train_with_a_missing_task_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    quick = _small_config("quickstart.yaml", tmp_path, task_checkpoint=str(tmp_path / "no.ckpt"))
    assert main(["train", "--config", str(quick)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"featcodec: error: task checkpoint not found: {tmp_path / 'no.ckpt'} "
        "(train one first: featcodec train --config configs/tasknet.yaml)"
    )


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    points = results["points"]
    assert [p["lambda"] for p in points] == [2.0, 0.5]
    for p in points:
        streams = sorted((out / "streams" / f"lambda{p['lambda']:g}").glob("*.fcb"))
        assert len(streams) == p["images"] == 16
        total = sum(s.stat().st_size for s in streams)
        # the reported rate is the files' size
        assert p["bpp"] == pytest.approx(8 * total / (16 * 32 * 32))
        assert 0 < p["bpp_estimated"] < p["bpp"]
        assert 0 <= p["accuracy"] <= 1 and 0 <= p["accuracy_uncompressed"] <= 1
        assert all(unpack(s.read_bytes()) for s in streams)
    assert list((out / "logs").glob("**/events.out.tfevents.*"))
    # the RD results (eval rd's format), the figure, and BD-rates against each anchor
    rd = load_results(out / "rd.json")
    assert rd.codecs()[0] == "learned (hyperprior)"
    ran = [a for a in ("x265-12bit", "zstd") if a not in results["anchors_skipped"]]
    assert rd.codecs()[1:] == ran and "zstd" in ran
    assert [b["anchor"] for b in results["bd_rate"]] == ran
    with Image.open(out / "rd.png") as im:
        im.verify()
    text = capsys.readouterr().out
    assert "bpp (file)" in text and "acc uncompressed" in text
    assert "BD-rate" in text and "zstd" in text


def test_entropy_bench_reports_both_paths(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "entropy", "--shape", "16", "24", "24", "--repeat", "1", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"featcodec", "compressai"}
    for r in report["results"].values():
        assert r["exact"] and r["bytes"] > 0 and r["encode_ms"] > 0
        ideal_bits = 8 * report["ideal_bytes"]
        assert r["overhead_pct"] == pytest.approx(100 * (8 * r["bytes"] / ideal_bits - 1))
    assert report["ratios"]["bytes"] == pytest.approx(
        report["results"]["featcodec"]["bytes"] / report["results"]["compressai"]["bytes"]
    )
    assert "featcodec / compressai" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_scalable_experiment_and_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scalable"
    assert main(["experiment", "scalable", "--quick", "--out", str(out), "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "(a) β=0.01 vs β=0" in printed and "(b) enhancement bits" in printed
    first = json.loads((out / "scalable.json").read_text())
    assert {r["codec"] for r in first["base"]} == {"base β=0", "base β=0.01"}
    assert len(first["enhancement"]) == 4 and first["config"]["resume"] is False
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.ckpt")}
    assert len(stamps) == 9  # task network, 2 β × 2 λ bases, 2 kinds × 2 λ_e enhancements
    # resumed: every checkpoint is kept, and the measurements come out the same
    assert main(["experiment", "scalable", "--quick", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 9
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.ckpt")} == stamps
    again = json.loads((out / "scalable.json").read_text())
    measured = ("bytes", "metrics", "fingerprint")
    for a, b in zip(again["base"], first["base"], strict=True):
        assert {k: a[k] for k in measured} == {k: b[k] for k in measured}
    assert again["enhancement"] == first["enhancement"]
    # a checkpoint is reused only for the same hyper-parameters, data and epochs
    from featcodec.eval.sweep import reusable
    from featcodec.training import EnhancementModule
    from featcodec.training.datasets import SyntheticScenesDataModule

    cfg = first["config"]
    data = SyntheticScenesDataModule(
        image_size=cfg["image_size"],
        train_size=cfg["train_size"],
        val_size=cfg["val_size"],
        test_size=cfg["test_size"],
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
    )
    ckpt = out / "enh-conditional-lambda0.004.ckpt"
    base = str(out / "base-beta0.01-lambda2.ckpt")
    kw = dict(N=16, M=16, downsample=3, hyper_downsample=1, lr=2e-3)
    assert reusable(ckpt, EnhancementModule(base, lmbda=0.004, **kw), data, 1)
    assert not reusable(ckpt, EnhancementModule(base, lmbda=0.03, **kw), data, 1)
    assert not reusable(ckpt, EnhancementModule(base, lmbda=0.004, **kw), data, 2)
    data.hparams["train_size"] += 1
    assert not reusable(ckpt, EnhancementModule(base, lmbda=0.004, **kw), data, 1)


def test_scalable_experiment_refuses_a_config_without_a_plain_base(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scalable"
    assert main(["experiment", "scalable", "--out", str(out), "--betas", "0.01,0.1"]) == 1
    assert "betas must hold 0" in capsys.readouterr().err and not out.exists()
    assert main(["experiment", "scalable", "--out", str(out), "--base-beta", "0.5"]) == 1
    assert "is not among the trained ones" in capsys.readouterr().err and not out.exists()
