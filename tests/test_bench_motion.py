"""``featcodec bench motion`` (eval/bench.py): warp throughput beside grid_sample and a copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from featcodec.cli import main
from featcodec.eval.bench import bench_motion, bench_pframe, format_motion_bench

TINY = [
    *("--batch", "2", "--channels", "8", "--size", "12", "--frame-size", "32"),
    *("--repeat", "1", "--threads", "2"),
]


def check_rows(rows: list[dict], device: str) -> None:
    pframe = [r for r in rows if r.get("source") == "extra"]
    assert {r["op"] for r in pframe} == {"P-frame encode", "P-frame decode"}
    assert all(r["ms"] > 0 and r["bytes"] > 0 for r in pframe)
    rows = [r for r in rows if r.get("source") != "extra"]
    found = {(r["dtype"], r["op"]) for r in rows if r["device"] == device}
    assert found == {(d, op) for d in ("fp32", "fp16") for op in ("warp", "grid_sample", "copy")}
    for r in rows:
        assert r["ms"] > 0 and r["tensors_per_s"] > 0 and r["gb_per_s"] > 0
        assert r["pct_of_copy"] > 0
        if r["op"] == "copy":
            assert r["pct_of_copy"] == pytest.approx(100.0)


def test_cpu_bench_writes_rows(tmp_path: Path, capsys) -> None:
    out = tmp_path / "motion.json"
    assert main(["bench", "motion", *TINY, "--devices", "cpu", "cuda", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bench"] == "motion" and report["shape"] == [2, 8, 12, 12]
    check_rows([r for r in report["rows"] if r["device"] == "cpu"], "cpu")
    warp = next(r for r in report["rows"] if r["op"] == "warp" and r["dtype"] == "fp32")
    # reference read + prediction written (2·8·12·12 fp32 each) + the float32 flow read
    assert warp["bytes"] == 2 * (2 * 8 * 12 * 12 * 4) + 2 * 2 * 12 * 12 * 4
    printed = capsys.readouterr().out
    assert "% of copy" in printed and "grid_sample" in printed
    if not torch.cuda.is_available():
        assert report["skipped"] == [{"device": "cuda", "reason": "CUDA is not available"}]
        assert "(cuda skipped: CUDA is not available)" in printed


def test_extra_rows_hook_is_kept_and_printed() -> None:
    extra = {"op": "P-frame encode", "device": "cpu", "dtype": "fp32", "ms": 12.5}
    report = bench_motion(1, 4, 8, repeat=1, devices=["cpu"], dtypes=["fp32"], extra_rows=[extra])
    assert report["rows"][-1] == {"source": "extra", **extra}
    assert "P-frame encode" in format_motion_bench(report).splitlines()[-1]


def test_bad_sizes_and_devices_are_one_line(capsys) -> None:
    assert main(["bench", "motion", "--batch", "0"]) == 1
    assert main(["bench", "motion", "--devices", "tpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "featcodec: error: --batch, --channels, --size, --repeat and --threads must be positive",
        "featcodec: error: --devices: 'tpu' is neither cpu nor cuda[:N]",
    ]


@pytest.mark.cuda
def test_cuda_bench_rows(tmp_path: Path) -> None:
    extra = bench_pframe(["cuda"], size=32, repeat=1)
    report = bench_motion(2, 8, 12, repeat=1, devices=["cuda"], extra_rows=extra)
    assert report["skipped"] == [] and report["cuda_device"]
    check_rows(report["rows"], "cuda")
