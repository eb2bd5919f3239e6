"""The stream fuzzer (eval/fuzz.py, ``featcodec fuzz``): a short deterministic run over image,
scalable and video streams has no non-documented outcome, every mutator class and truncation
at every offset is covered, the forgeries get past the container's CRCs, and the classifier
tells a crash, a hang, a memory blow-up and a stray exception from a documented error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from featcodec.cli import main
from featcodec.codec.bitstream import unpack
from featcodec.codec.errors import BitstreamError
from featcodec.eval.fuzz import DOCUMENTED, UNDOCUMENTED, Recorder, Settings, plan, run
from featcodec.eval.fuzz_mutate import (
    FORGERS,
    MUTATORS,
    Material,
    forge_field,
    forge_payload,
    mutate,
    parts,
    rebuild,
)
from featcodec.eval.fuzz_pool import Case
from featcodec.eval.fuzz_worker import MANIFEST, SELFTEST, TARGETS

SIZE = (16, 24)
CASES = 4000


@pytest.fixture(scope="module")
def seeds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-seeds")


@pytest.fixture(scope="module")
def fuzzed(seeds_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A short run: truncation at every offset of every target's seed, then every mutator."""
    out = tmp_path_factory.mktemp("fuzz-out")
    return run(Settings(cases=CASES, size=SIZE, workers=2), out=out, workdir=seeds_dir)


@pytest.fixture(scope="module")
def materials(fuzzed: dict, seeds_dir: Path) -> dict[str, Material]:
    manifest = json.loads((seeds_dir / MANIFEST).read_text())
    raw = {k: (seeds_dir / v["stream"]).read_bytes() for k, v in manifest["seeds"].items()}
    return {k: Material.of(v, tuple(o for n, o in raw.items() if n != k)) for k, v in raw.items()}


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_no_non_documented_outcome(fuzzed: dict) -> None:
    assert fuzzed["cases"] == CASES
    assert fuzzed["undocumented"] == 0, fuzzed["findings"][:5]
    assert set(fuzzed["totals"]) <= set(DOCUMENTED), fuzzed["totals"]
    assert fuzzed["totals"]["error"] > CASES // 2
    assert fuzzed["totals"]["ok-unchanged"] > 0  # reordered base sections, ignored layers
    assert fuzzed["max_cpu_s"] < 1.0
    assert fuzzed["settings"]["threads"] == 1


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_every_target_and_mutator_produced_cases(fuzzed: dict) -> None:
    assert set(fuzzed["counts"]) == set(TARGETS)
    for target, per in fuzzed["counts"].items():
        assert set(per) == set(MUTATORS), target
        assert all(sum(c.values()) > 0 for c in per.values()), target


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_truncation_at_every_offset(fuzzed: dict) -> None:
    lengths = fuzzed["seed_bytes"]
    assert set(lengths) == {"image", "scalable", "video"}
    for target, (kind, _) in TARGETS.items():
        assert fuzzed["truncation"][target] == {"offsets": lengths[kind], "length": lengths[kind]}
    # a scalable stream cut right after its base decodes with layers="base", unchanged
    assert fuzzed["counts"]["scalable-base"]["truncate"].get("ok-unchanged") == 1


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_forgeries_get_past_the_container_crcs(fuzzed: dict, materials: dict) -> None:
    for target in TARGETS:
        for mutator in ("forge-field", "forge-payload", "forge-shape", "sections"):
            reached = fuzzed["reached_decoder"].get(f"{target}/{mutator}", 0)
            assert reached > 0, (target, mutator)
    for kind, m in materials.items():
        past_header = changed = 0
        for j in range(200):
            data, _ = forge_field(m, random.Random(j), j)
            try:
                unpack(data)
                past_header += 1
            except BitstreamError as e:
                assert "corrupt header" not in str(e)  # its CRC is always recomputed
                past_header += "section" in str(e) and "CRC" in str(e)
            forged, description = forge_payload(m, random.Random(j), j)
            stream = unpack(forged)  # every CRC recomputed: the container accepts it
            assert stream.fingerprint == m.stream.fingerprint, description
            changed += forged != m.data
        assert past_header > 20 and changed > 180, kind


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_build_rewrites_a_stream_exactly(materials: dict) -> None:
    for m in materials.values():
        shapes, sections = parts(m.stream)
        assert rebuild(m, shapes, sections) == m.data


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_cases_are_deterministic(materials: dict) -> None:
    settings = Settings(cases=300, seed=3)
    lengths = {t: len(materials[kind].data) for t, (kind, _) in TARGETS.items()}
    planned = plan(settings, lengths)
    assert planned == plan(settings, lengths) and len(planned) == 300
    for target, mutator, j in planned[:100]:
        m = materials[TARGETS[target][0]]
        first = mutate(mutator, m, random.Random(f"3/{target}/{mutator}/{j}"), j)
        assert first == mutate(mutator, m, random.Random(f"3/{target}/{mutator}/{j}"), j)


def test_a_changed_decode_is_documented_only_for_forgeries() -> None:
    rec = Recorder(Settings(timeout=1.0), out=None)
    rec.legit = {"image": {"growth": 10 << 20}}
    reply = {"outcome": "ok-changed", "time": 0.01, "growth": 0}
    for mutator in ("forge-payload", "bitflip"):
        rec.record(Case(0, "image", mutator, 0, b""), reply)
    rec.record(Case(1, "image", "bitflip", 1, b""), {"outcome": "error", "time": 2.0})
    rec.record(Case(2, "image", "bitflip", 2, b""), {"outcome": "error", "growth": 50 << 20})
    rec.record(Case(3, "image", "bitflip", 3, b""), {"outcome": "error", "growth": 30 << 20})
    assert rec.counts["image"]["forge-payload"] == {"ok-forged": 1}
    assert rec.counts["image"]["bitflip"] == {"ok-changed": 1, "slow": 1, "memory": 1, "error": 1}
    assert rec.undocumented == 3
    assert "forge-payload" in FORGERS and "bitflip" not in FORGERS


def test_the_classifier_tells_every_outcome(tmp_path: Path) -> None:
    commands = ["ok", "changed", "error", "raise", "crash", "ok", "hang", "memory:300", "ok"]
    cases = [Case(i, SELFTEST, "selftest", i, c.encode()) for i, c in enumerate(commands)]
    settings = Settings(workers=1, timeout=1.0, mem_limit_mib=1024)
    report = run(settings, out=tmp_path, cases=[*cases, Case(9, SELFTEST, "x", 9, b"memory:2000")])
    assert report["counts"][SELFTEST]["selftest"] == {
        "ok-unchanged": 3,
        "ok-changed": 1,
        "error": 1,
        "other-exception": 1,
        "crash": 1,
        "hang": 1,
        "memory": 1,
    }
    assert report["counts"][SELFTEST]["x"] == {"memory": 1}  # over the address-space cap
    findings = {f["id"]: f for f in report["findings"]}
    assert set(findings) == {1, 3, 4, 6, 7, 9}
    assert findings[3]["type"] == "KeyError" and "Traceback" in findings[3]["traceback"]
    assert "SIGSEGV" in findings[4]["message"]
    assert "no answer" in findings[6]["message"]
    assert findings[7]["growth"] > 250 << 20
    assert findings[9]["type"] == "MemoryError"
    saved = sorted(p.name for p in (tmp_path / "reproducers").glob("*.fcb"))
    assert len(saved) == 6 and "crash-selftest-selftest-000004.fcb" in saved
    assert (
        tmp_path / "reproducers" / "crash-selftest-selftest-000004.fcb"
    ).read_bytes() == b"crash"
    assert set(UNDOCUMENTED) >= {f["outcome"] for f in findings.values()}


@pytest.mark.slow  # the short run (4,000 cases, ~20 s) or the CLI's
def test_cli_fuzz_writes_the_report(
    fuzzed: dict, seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["fuzz", "--cases", "200", "--workers", "1", "--size", *map(str, SIZE)]
    argv += ["--workdir", str(seeds_dir)]  # the seeds of the run above, not built again
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "non-documented outcomes: 0" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == 200 and report["undocumented"] == 0
    assert report["settings"]["workers"] == 1 and report["settings"]["seed"] == 0
    assert main([*argv, "--seed", "1", "--out", str(tmp_path)]) == 1  # other seeds' folder
    assert "holds the seeds of other settings" in capsys.readouterr().err
    assert main(["fuzz", "--targets", "jpeg", "--out", str(tmp_path)]) == 1
    assert "unknown target 'jpeg'" in capsys.readouterr().err
    cut = tmp_path / "cut.fcb"
    cut.write_bytes((seeds_dir / "video.fcb").read_bytes()[:-3])
    replay = ["fuzz", "--replay", str(cut), "--workdir", str(seeds_dir)]
    assert main([*replay, "--target", "video"]) == 0
    assert "outcome: error\n" in capsys.readouterr().out
    assert main([*replay[:3], "--target", "video"]) == 1
    assert "--replay needs --workdir" in capsys.readouterr().err
