"""``featcodec eval rd | eval bd | plot rd`` end to end on tiny checkpoints, and bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY
from PIL import Image

from featcodec.cli import main
from featcodec.codec.facade import Codec, default_arch
from featcodec.eval.anchors import build_anchor
from featcodec.eval.data import synthetic_eval_set
from featcodec.eval.rd import TaskSplit, evaluate_anchor, evaluate_codec
from featcodec.eval.results import RESULTS_FORMAT, RESULTS_VERSION, load_results

SIZE, IMAGE = 6, 32
HAS_X265 = build_anchor("x265-12bit").available() is None


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def results(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rd") / "rd.json"
    streams = out.parent / "streams"
    args = ["eval", "rd", tiny_checkpoint, "--size", SIZE, "--image-size", IMAGE]
    assert run(*args, "--anchors", "zstd", "jpeg", "--streams", streams, "-o", out) == 0
    return out


def test_results_json_carries_the_traceable_fields(results: Path, tiny_checkpoint: Path) -> None:
    doc = json.loads(results.read_text())
    assert (doc["format"], doc["version"]) == (RESULTS_FORMAT, RESULTS_VERSION)
    for package in ("python", "torch", "torchvision", "compressai", "numpy", "featcodec"):
        assert doc["software"][package], package
    assert doc["dataset"] == {
        "name": "synthetic-scenes",
        "split": "test",
        "size": SIZE,
        "image_size": IMAGE,
        "seed": 0,
    }
    assert (doc["task"], doc["metric"]) == ("classification", "accuracy")
    learned = [r for r in doc["rows"] if r["kind"] == "learned"]
    anchors = [r for r in doc["rows"] if r["kind"] == "anchor"]
    assert len(learned) == 1
    assert {r["codec"] for r in anchors} == {"zstd", "jpeg"}
    assert len(anchors) == len(build_anchor("zstd").settings) + len(build_anchor("jpeg").settings)
    row = learned[0]
    codec = Codec.from_checkpoint(tiny_checkpoint)
    assert row["fingerprint"] == codec.fingerprint.hex()
    assert row["config"] == codec.arch and row["checkpoint"] == str(tiny_checkpoint)
    for r in doc["rows"]:
        assert r["images"] == SIZE
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / IMAGE**2)
        assert 0 <= r["metrics"]["accuracy"] <= 1
        assert r["bits_per_element"] > 0 and r["fingerprint"]
    # the anchors' network is the checkpoint's task network, so the references agree
    assert {r["reference"]["accuracy"] for r in doc["rows"]} == {row["reference"]["accuracy"]}


def test_learned_rate_is_the_streams_real_bytes(results: Path, tiny_checkpoint: Path) -> None:
    row = next(r for r in load_results(results).rows if r.kind == "learned")
    files = sorted((results.parent / "streams").rglob("*.fcb"))
    assert len(files) == SIZE
    assert row.bytes == pytest.approx(sum(f.stat().st_size for f in files) / SIZE)
    codec = Codec.from_checkpoint(tiny_checkpoint)
    data = synthetic_eval_set("test", SIZE, IMAGE)
    again = [len(codec.encode(data.dataset[i]["image"])) for i in range(len(data))]
    assert row.bytes == pytest.approx(sum(again) / SIZE)


def test_csv_has_one_row_per_point(results: Path) -> None:
    with results.with_suffix(".csv").open() as f:
        table = list(csv.DictReader(f))
    doc = json.loads(results.read_text())
    assert len(table) == len(doc["rows"])
    for key in ("codec", "point", "bpp", "bits_per_element", "accuracy", "fingerprint"):
        assert key in table[0]
    assert float(table[0]["bpp"]) == pytest.approx(doc["rows"][0]["bpp"])


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<")])
def test_plot_writes_a_valid_figure(results: Path, tmp_path: Path, suffix: str, magic: bytes):
    out = tmp_path / f"rd{suffix}"
    assert run("plot", "rd", results, "--anchor", "zstd", "-o", out) == 0
    assert out.read_bytes().startswith(magic)
    if suffix == ".png":
        with Image.open(out) as im:
            im.verify()
        with Image.open(out) as im:
            assert im.size[0] > 400 and im.size[1] > 300


def test_bd_table_against_a_named_anchor(results: Path, capsys: pytest.CaptureFixture) -> None:
    assert run("eval", "bd", results, "--anchor", "zstd") == 0
    out = capsys.readouterr().out
    assert "BD-rate" in out and "jpeg" in out and "hyperprior" in out
    assert run("eval", "bd", results, "--anchor", "x265-nope") == 1
    assert "no codec named 'x265-nope'" in capsys.readouterr().err


def test_more_results_files_and_one_point_curves(results: Path, tmp_path: Path, capsys) -> None:
    doc = json.loads(results.read_text())
    doc["rows"] = [r for r in doc["rows"] if r["codec"] == "zstd"][:1]  # a one-point curve
    other = tmp_path / "one.json"
    other.write_text(json.dumps(doc))
    out = tmp_path / "rd.png"
    assert run("plot", "rd", results, other, "--anchor", "jpeg", "-o", out) == 0
    assert out.is_file()
    assert run("eval", "bd", results, other, "--anchor", "jpeg") == 0
    text = capsys.readouterr().out
    assert "zstd (one)" in text and "need 2" in text


def test_bad_results_and_figure_names(results: Path, tmp_path: Path, capsys) -> None:
    old = tmp_path / "results.json"  # what the demo wrote before RD results had a format
    old.write_text(json.dumps({"config": {}, "points": [{"lambda": 1, "bpp": 0.2}]}))
    assert run("plot", "rd", old, "-o", tmp_path / "x.png") == 1
    err = capsys.readouterr().err
    assert "older featcodec" in err and "Traceback" not in err
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**json.loads(results.read_text()), "version": 99}))
    assert run("eval", "bd", newer, "--anchor", "zstd") == 1
    assert "version 99" in capsys.readouterr().err
    assert run("plot", "rd", results, "-o", tmp_path / "rd.gif") == 1
    assert "unsupported figure format" in capsys.readouterr().err
    assert run("plot", "rd", results, "--metric", "miou", "-o", tmp_path / "rd.png") == 1
    assert "no metric 'miou'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "rd.png").exists()


def test_checkpoint_that_does_not_fit_the_dataset(tmp_path: Path, capsys) -> None:
    codec = Codec.build(default_arch(num_classes=10, codec=dict(TINY)))
    ckpt = tmp_path / "ten.ckpt"
    codec.save(ckpt)
    out = tmp_path / "rd.json"
    assert run("eval", "rd", ckpt, "--size", 2, "--image-size", IMAGE, "-o", out) == 1
    err = capsys.readouterr().err
    assert "predicts 10 classes" in err and "has 5" in err
    assert not out.exists() and not out.with_suffix(".csv").exists()


def test_missing_ffmpeg_skips_x265_with_a_message(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "rd.json"
    args = ["eval", "rd", tiny_checkpoint, "--size", 2, "--image-size", IMAGE, "-o", out]
    assert run(*args, "--anchors", "x265-12bit", "zstd") == 0
    assert "x265-12bit anchor skipped: ffmpeg" in capsys.readouterr().err
    assert {r.codec for r in load_results(out).rows} == {"hyperprior", "zstd"}
    only = tmp_path / "only.json"
    task_args = ["--task-checkpoint", "missing.ckpt"]
    assert run("eval", "rd", *task_args, "--anchors", "x265-12bit", "-o", only) == 1
    assert "missing.ckpt" in capsys.readouterr().err


def test_run_folder_is_one_curve(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "sweep"
    (run_dir / "a").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, run_dir / "a" / "last.ckpt")
    shutil.copy(tiny_checkpoint, run_dir / "a" / "epoch=0.ckpt")  # same weights
    other = Codec.build(default_arch(codec=dict(TINY)))
    other.save(run_dir / "b.ckpt")
    torch.save({"not": "ours"}, run_dir / "foreign.ckpt")
    out, logs = tmp_path / "rd.json", tmp_path / "tb"
    args = ["--size", 2, "--image-size", IMAGE, "--tensorboard", logs, "-o", out]
    assert run("eval", "rd", run_dir, *args) == 0
    assert list(logs.glob("events.out.tfevents.*"))  # the sweep's RD figure
    err = capsys.readouterr().err
    assert "same weights" in err and "foreign.ckpt" in err
    rows = load_results(out).rows
    assert len(rows) == 2 and {r.codec for r in rows} == {"sweep"}
    assert len({r.fingerprint for r in rows}) == 2
    assert run("eval", "rd", run_dir, "--size", 2, "-o", out) == 1  # exists: not replaced
    assert "--overwrite" in capsys.readouterr().err


def test_image_codec_reports_psnr() -> None:
    torch.manual_seed(0)
    codec = Codec.build(default_arch(split_at="input", codec=dict(TINY))).eval()
    data = synthetic_eval_set("test", 2, IMAGE)
    row = evaluate_codec(codec, data, "image codec", "untrained")
    assert row.psnr is not None and math.isfinite(row.psnr)
    assert row.metrics["psnr"] == row.psnr
    anchor = evaluate_anchor(build_anchor("zstd"), 8, TaskSplit.of_codec(codec), data)
    assert anchor.psnr is not None and anchor.psnr > 35  # 8-bit quantization of the image
    coarse = evaluate_anchor(build_anchor("zstd"), 2, TaskSplit.of_codec(codec), data)
    assert coarse.psnr < anchor.psnr and coarse.bytes < anchor.bytes


@pytest.mark.skipif(not HAS_X265, reason="needs ffmpeg with libx265 (apt-get install ffmpeg)")
def test_x265_anchor_in_eval(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "rd.json"
    args = ["eval", "rd", tiny_checkpoint, "--size", 4, "--image-size", IMAGE, "-o", out]
    assert run(*args, "--anchors", "x265-12bit") == 0
    res = load_results(out)
    rows = [r for r in res.rows if r.codec == "x265-12bit"]
    assert len(rows) == len(build_anchor("x265-12bit").settings)
    by_qp = sorted(rows, key=lambda r: r.setting)
    assert all(a.bytes > b.bytes for a, b in zip(by_qp, by_qp[1:], strict=False))
    assert res.software["ffmpeg"].startswith("ffmpeg version")
