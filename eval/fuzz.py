"""A fuzzer for ``.fcb`` streams (``featcodec fuzz``; tests/test_fuzz.py runs a short one).

Seed streams of three tiny codecs (image, scalable, video: :mod:`eval.fuzz_seeds`) are
mutated (:mod:`eval.fuzz_mutate`: truncation at every offset, bit flips, byte substitutions,
forged fields and payloads with recomputed CRCs, huge counts and lengths, reordered and
duplicated sections, foreign magic, empty and random streams, splices) and each case is
decoded through the public decode API in a pool of worker processes (:mod:`eval.fuzz_pool`)
with a time limit and a memory limit per case. Every case gets one outcome:

documented
    ``error`` (a :class:`~codec.errors.FeatcodecError` with a one-line message),
    ``ok-unchanged`` (decoded, every output tensor equal to the seed's decode),
    ``ok-partial`` (``video-resume``: the frames decoded equal the seed's, the lost ones are
    reported), ``ok-forged`` (a forgery with recomputed CRCs decoded to other values:
    undetectable by design, the CRC being the integrity check the forger recomputed).
not documented
    ``ok-changed`` (another output although no CRC was recomputed), ``other-exception``
    (any other exception), ``crash`` (the worker died), ``hang`` (no answer within twice the
    time limit: killed), ``slow`` (answered, but its CPU time was over the limit: wall time
    is reported too, CPU time does not depend on the machine's load), ``memory`` (peak memory
    growth over ``mem_factor`` times the legitimate decode's, or an allocation refused).

Every non-documented case is saved as a reproducer (the bytes and a JSON sidecar with the
target, mutator, description and traceback). The report counts outcomes per target and
mutator, and gives the longest case, the largest memory ratio and the settings.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from featcodec.codec.errors import InputError
from featcodec.eval.fuzz_mutate import FORGERS, MUTATORS, Material, mutate
from featcodec.eval.fuzz_pool import Case, run_pool
from featcodec.eval.fuzz_worker import BACKBONE, MANIFEST, SELFTEST, TARGETS

log = logging.getLogger(__name__)

DOCUMENTED = ("error", "ok-unchanged", "ok-partial", "ok-forged")
UNDOCUMENTED = ("ok-changed", "other-exception", "crash", "hang", "slow", "memory")
OUTCOMES = DOCUMENTED + UNDOCUMENTED
MAX_CASE_BYTES = 1 << 20
MAX_SAVED = 1000
"""Reproducers saved at most (every non-documented case is counted)."""


@dataclass
class Settings:
    """What a fuzzing run does.

    Attributes:
        cases: cases in all; truncation at every offset of every target's seed comes first
            when it fits (else ``truncation_share`` of the cases, offsets evenly spread).
        seed: seeds the codecs, the streams and every mutation.
        workers: worker processes (one torch thread each).
        timeout: CPU seconds a case may take (a worker silent for twice as long is killed).
        mem_factor: a case may grow the peak memory this many times the legitimate decode's
            growth (measured in the worker; at least ``mem_floor_mib``, the allocator's noise).
        mem_limit_mib: address space a worker may grow by (an allocation beyond it fails).
        size: the seed inputs' height and width.
        backbone: the seed codecs' task network (see :data:`~eval.fuzz_seeds.BACKBONE`).
    """

    cases: int = 2000
    seed: int = 0
    workers: int = 2
    timeout: float = 1.0
    mem_factor: float = 4.0
    mem_floor_mib: float = 4.0
    mem_limit_mib: int = 4096
    size: tuple[int, int] = (32, 48)
    backbone: str = BACKBONE
    targets: tuple[str, ...] = tuple(TARGETS)
    mutators: tuple[str, ...] = tuple(MUTATORS)
    truncation_share: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


def plan(settings: Settings, lengths: dict[str, int]) -> list[tuple[str, str, int]]:
    """``(target, mutator, index)`` of every case, shuffled (deterministic in the seed);
    ``lengths`` are the targets' seed stream lengths (truncation enumerates their offsets)."""
    truncations = []
    if "truncate" in settings.mutators:
        truncations = [(t, "truncate", j) for t in settings.targets for j in range(lengths[t])]
    pairs = [(t, m) for m in settings.mutators if m != "truncate" for t in settings.targets]
    if not pairs:
        keep = min(settings.cases, len(truncations))
    elif settings.cases >= len(truncations) + len(pairs):
        keep = len(truncations)
    else:
        keep = min(len(truncations), int(settings.cases * settings.truncation_share))
    if keep < len(truncations):
        step = len(truncations) / max(keep, 1)
        truncations = [truncations[int(i * step)] for i in range(keep)]
    rest = settings.cases - len(truncations)
    cases = truncations + [(*pairs[i % len(pairs)], i // len(pairs)) for i in range(rest)]
    random.Random(settings.seed).shuffle(cases)
    return cases


def generate(
    settings: Settings, materials: dict[str, Material], planned: list[tuple[str, str, int]]
) -> Iterator[Case]:
    """The cases of ``planned``, made one at a time."""
    for i, (target, mutator, j) in enumerate(planned):
        rng = random.Random(f"{settings.seed}/{target}/{mutator}/{j}")
        data, description = mutate(mutator, materials[target], rng, j)
        if data == materials[target].data:
            description += " (no change)"
        yield Case(i, target, mutator, j, data[:MAX_CASE_BYTES], description)


def seeded_cases(settings: Settings, work: Path) -> Iterator[Case]:
    """The planned cases of ``settings``; the seeds are read when the first case is asked
    for, once a worker is ready (the first worker builds them into ``work``)."""
    manifest = json.loads((work / MANIFEST).read_text())
    raw = {k: (work / v["stream"]).read_bytes() for k, v in manifest["seeds"].items()}
    materials = {}
    for t in settings.targets:
        kind = TARGETS[t][0]
        materials[t] = Material.of(raw[kind], tuple(v for k, v in raw.items() if k != kind))
    planned = plan(settings, {t: len(m.data) for t, m in materials.items()})
    yield from generate(settings, materials, planned)


def normalize(message: str) -> str:
    """``message`` with numbers and hex digests replaced, to count error kinds."""
    message = re.sub(r"\b[0-9a-f]{16}\b", "<hex>", message)
    message = re.sub(r"b'.*?'|b\".*?\"", "<bytes>", message)
    return re.sub(r"\d[\d,_.]*", "#", message)[:160]


class Recorder:
    """Collects outcomes, classifies time and memory, saves reproducers."""

    def __init__(self, settings: Settings, out: Path | None) -> None:
        self.settings = settings
        self.out = out
        self.counts: dict[str, dict[str, Counter[str]]] = {}
        self.legit: dict[str, dict[str, float]] = {}
        self.ready: dict[str, Any] = {}
        self.messages: Counter[str] = Counter()
        self.reached: Counter[str] = Counter()
        self.truncated: dict[str, set[int]] = {}
        self.findings: list[dict[str, Any]] = []
        self.undocumented = 0
        self.done = 0
        self.max_time = (0.0, "")
        self.max_cpu = (0.0, "")
        self.max_ratio = (0.0, "")
        self.max_process_ratio = 0.0
        self.max_growth = 0
        self.started = time.monotonic()
        self.startup_s = 0.0

    def on_ready(self, message: dict[str, Any]) -> None:
        if not self.legit:
            self.legit, self.ready = message["legit"], message
            self.startup_s = time.monotonic() - self.started

    def baseline(self, target: str) -> float:
        legit = self.legit.get(target, {}).get("growth", 0.0)
        return max(legit, self.settings.mem_floor_mib * (1 << 20))

    def record(self, case: Case, reply: dict[str, Any]) -> None:
        outcome = reply["outcome"]
        if outcome == "ok-changed" and case.mutator in FORGERS:
            outcome = "ok-forged"
        where = f"case {case.id} ({case.target}, {case.mutator}: {case.description})"
        seconds, growth = reply.get("time"), reply.get("growth")
        if seconds is not None:
            cpu = reply.get("cpu", seconds)
            if seconds > self.max_time[0]:
                self.max_time = (seconds, where)
            if cpu > self.max_cpu[0]:
                self.max_cpu = (cpu, where)
            if cpu > self.settings.timeout and outcome in (*DOCUMENTED, "ok-changed"):
                outcome = "slow"
        if growth is not None:
            self.max_growth = max(self.max_growth, growth)
            legit = self.legit.get(case.target, {}).get("growth", 0.0)
            ratio = growth / max(legit, 1.0)
            if ratio > self.max_ratio[0]:
                self.max_ratio = (ratio, where)
            if "rss" in reply and self.ready:
                process = (reply["rss"] + growth) / (self.ready["rss"] + legit)
                self.max_process_ratio = max(self.max_process_ratio, process)
            if growth > self.settings.mem_factor * self.baseline(case.target):
                if outcome in (*DOCUMENTED, "ok-changed", "slow"):
                    outcome = "memory"
        self.counts.setdefault(case.target, {}).setdefault(case.mutator, Counter())[outcome] += 1
        self.done += 1
        if case.mutator == "truncate":
            self.truncated.setdefault(case.target, set()).add(len(case.data))
        message = reply.get("message", "")
        if outcome == "error":
            self.messages[normalize(message)] += 1
        if outcome != "error" or reply.get("stage") == "decoder":
            self.reached[f"{case.target}/{case.mutator}"] += 1
        if outcome in UNDOCUMENTED:
            self.undocumented += 1
            self.save(case, outcome, reply)

    def save(self, case: Case, outcome: str, reply: dict[str, Any]) -> None:
        finding = {
            "id": case.id,
            "outcome": outcome,
            "target": case.target,
            "mutator": case.mutator,
            "description": case.description,
            **{k: v for k, v in reply.items() if k not in ("id", "outcome")},
        }
        if self.out is not None and len(self.findings) < MAX_SAVED:
            folder = self.out / "reproducers"
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{outcome}-{case.target}-{case.mutator}-{case.id:06d}"
            finding["replay"] = (
                f"featcodec fuzz --replay {folder / stem}.fcb --target {case.target} "
                f"--workdir {self.out / 'seeds'}"
            )
            (folder / f"{stem}.fcb").write_bytes(case.data)
            (folder / f"{stem}.json").write_text(json.dumps(finding, indent=2))
            finding["file"] = str(folder / f"{stem}.fcb")
        log.info("fuzz: %s in case %d (%s, %s)", outcome, case.id, case.target, case.mutator)
        if len(self.findings) < MAX_SAVED:
            self.findings.append({k: v for k, v in finding.items() if k != "log"})


def run(
    settings: Settings,
    out: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    cases: list[Case] | None = None,
    progress: Callable[[Recorder, int], None] | None = None,
) -> dict[str, Any]:
    """Fuzz as ``settings`` say and return the report (also written to ``out``/report.json
    with the reproducers, when ``out`` is given). ``cases`` replaces the planned cases (the
    :data:`~eval.fuzz_worker.SELFTEST` target needs no seeds); ``progress(recorder, total)``
    is called after every case."""
    if settings.workers < 1 or settings.cases < 0 or settings.timeout <= 0:
        raise InputError("workers must be ≥ 1, cases ≥ 0 and the timeout positive")
    out_dir = Path(out) if out is not None else None
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="featcodec-fuzz-") if own else str(workdir))
    work.mkdir(parents=True, exist_ok=True)
    if cases is None and (work / MANIFEST).is_file():
        have = json.loads((work / MANIFEST).read_text())
        want = {"seed": settings.seed, "size": list(settings.size), "backbone": settings.backbone}
        if any(have.get(k) != v for k, v in want.items()):
            raise InputError(f"{work} holds the seeds of other settings than {want}")
    started = time.monotonic()
    try:
        targets, build = list(settings.targets), None
        if cases is None:
            stream: Iterator[Case] = seeded_cases(settings, work)
            total = settings.cases
            spec = {"seed": settings.seed, "size": settings.size, "backbone": settings.backbone}
            build = json.dumps(spec)
        else:
            targets = sorted({c.target for c in cases})
            stream, total = iter(cases), len(cases)
        recorder = Recorder(settings, out_dir)
        recorder.started = started

        def record(case: Case, reply: dict[str, Any]) -> None:
            recorder.record(case, reply)
            if progress is not None:
                progress(recorder, total)

        run_pool(
            stream,
            targets,
            work,
            settings.workers,
            settings.timeout,
            settings.mem_limit_mib,
            record,
            recorder.on_ready,
            build,
        )
        elapsed = time.monotonic() - started
        seeds = json.loads((work / MANIFEST).read_text()) if (work / MANIFEST).is_file() else {}
        report = make_report(settings, recorder, seeds, elapsed)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if recorder.undocumented and (work / MANIFEST).is_file():
                shutil.copytree(work, out_dir / "seeds", dirs_exist_ok=True)
                report["seeds_dir"] = str(out_dir / "seeds")
            (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def replay(path: str | os.PathLike[str], target: str, workdir: str | os.PathLike[str]) -> dict:
    """Decode the stream at ``path`` as fuzz target ``target`` with the seed codecs of
    ``workdir`` (a run's ``seeds`` folder), in this process: the worker's reply (outcome,
    time, memory, exception and traceback)."""
    from featcodec.eval.fuzz_seeds import load_targets
    from featcodec.eval.fuzz_worker import run_case

    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if not (Path(workdir) / MANIFEST).is_file():
        raise InputError(f"{workdir} holds no fuzz seeds ({MANIFEST})")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    return run_case(load_targets(workdir, [target])[0], data)


def make_report(
    settings: Settings, rec: Recorder, seeds: dict[str, Any], elapsed: float
) -> dict[str, Any]:
    """The JSON report of a run (see :func:`run`)."""
    totals: Counter[str] = Counter()
    for per_mutator in rec.counts.values():
        for counter in per_mutator.values():
            totals.update(counter)
    lengths = {k: v["bytes"] for k, v in seeds.get("seeds", {}).items()}
    truncation = {
        t: {"offsets": len(offsets), "length": lengths.get(TARGETS[t][0], 0)}
        for t, offsets in rec.truncated.items()
        if t != SELFTEST
    }
    mib = 1 << 20
    return {
        "settings": {
            **asdict(settings),
            "threads": rec.ready.get("threads"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (workers)"),
            "cpus": os.cpu_count(),
            "peak_reset": rec.ready.get("peak_reset"),
        },
        "cases": rec.done,
        "elapsed_s": round(elapsed, 1),
        "startup_s": round(rec.startup_s, 1),
        "cases_per_s": round(rec.done / max(elapsed - rec.startup_s, 1e-9), 1),
        "totals": {k: totals[k] for k in OUTCOMES if totals[k]},
        "undocumented": rec.undocumented,
        "counts": {
            t: {m: dict(c) for m, c in sorted(per.items())} for t, per in sorted(rec.counts.items())
        },
        "legit": {
            t: {
                "time_s": round(v["time"], 4),
                "growth_mib": round(v["growth"] / mib, 2),
                "warm_growth_mib": round(v["warm_growth"] / mib, 2),
            }
            for t, v in rec.legit.items()
        },
        "max_time_s": round(rec.max_time[0], 4),
        "max_time_case": rec.max_time[1],
        "max_cpu_s": round(rec.max_cpu[0], 4),
        "max_cpu_case": rec.max_cpu[1],
        "max_memory_ratio": round(rec.max_ratio[0], 2),
        "max_memory_case": rec.max_ratio[1],
        "max_growth_mib": round(rec.max_growth / mib, 2),
        "max_process_memory_ratio": round(rec.max_process_ratio, 3),
        "worker_rss_mib": round(rec.ready.get("rss", 0) / mib, 1),
        "seed_bytes": lengths,
        "truncation": truncation,
        "reached_decoder": dict(sorted(rec.reached.items())),
        "top_errors": rec.messages.most_common(30),
        "findings": rec.findings,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: outcomes per target and mutator, then the summary lines."""
    shown = [o for o in OUTCOMES if report["totals"].get(o)] or ["error"]
    width = max([len(f"{t} {m}") for t, per in report["counts"].items() for m in per] + [14])
    lines = [f"{'target mutator':<{width}} " + " ".join(f"{o:>15}" for o in shown)]
    for target, per in report["counts"].items():
        for mutator, counts in per.items():
            cells = " ".join(f"{counts.get(o, 0):>15}" for o in shown)
            lines.append(f"{target + ' ' + mutator:<{width}} {cells}")
    lines.append(
        f"{'total':<{width}} " + " ".join(f"{report['totals'].get(o, 0):>15}" for o in shown)
    )
    s = report["settings"]
    legit = ", ".join(
        f"{t} {v['time_s'] * 1000:.0f} ms / {v['growth_mib']:.2f} MiB"
        for t, v in report["legit"].items()
    )
    lines += [
        "",
        f"{report['cases']} cases in {report['elapsed_s']} s ({report['startup_s']} s to build the "
        f"seeds and start; {report['cases_per_s']} cases/s), "
        f"{s['workers']} workers × {s['threads']} thread, OMP_WAIT_POLICY={s['OMP_WAIT_POLICY']}, "
        f"seed {s['seed']}",
        f"limits: {s['timeout']:g} s, memory growth {s['mem_factor']:g}× the legitimate decode's "
        f"(at least {s['mem_floor_mib'] * s['mem_factor']:g} MiB)",
        f"legitimate decodes: {legit}",
        f"longest case: {report['max_time_s'] * 1000:.1f} ms, {report['max_time_case']}",
        f"most CPU: {report['max_cpu_s'] * 1000:.1f} ms, {report['max_cpu_case']}",
        f"largest memory growth: {report['max_growth_mib']} MiB, ratio "
        f"{report['max_memory_ratio']} to the legitimate decode's, {report['max_memory_case']}; "
        f"whole worker (resident {report['worker_rss_mib']} MiB): "
        f"{report['max_process_memory_ratio']}× the legitimate decode's peak",
        f"non-documented outcomes: {report['undocumented']}",
    ]
    return "\n".join(lines)
