"""A pool of fuzzing workers (:mod:`eval.fuzz_worker`) with a time limit per case.

Each worker is a long-lived ``python -m featcodec.eval.fuzz_worker`` process (one torch
thread, seed codecs loaded once) fed one case at a time over a pipe. A worker that does not
answer within twice the case's time limit (plus a grace for the pipe; a case over the limit
itself is ``slow``, by the CPU time the worker measures) is killed and the case recorded as
``hang``; a worker that dies (a signal, a segfault, an exit) makes the
case a ``crash``. Either way a fresh worker takes its place.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcodec.eval.fuzz_worker import REPLY, REQUEST

log = logging.getLogger(__name__)

STARTUP_S = 180.0
"""How long a worker may take to load torch and the seed codecs."""
GRACE_S = 0.5
"""A silent worker is killed after twice the time limit and this (pipe, a busy machine)."""
LOG_TAIL = 3000


@dataclass
class Case:
    """One fuzzed stream: its id, target, mutator, index within its class and bytes."""

    id: int
    target: str
    mutator: str
    index: int
    data: bytes
    description: str = ""


def worker_env() -> dict[str, str]:
    """The workers' environment: one torch/BLAS thread, passive OpenMP waiting, no warnings,
    and a fixed mmap threshold so large buffers go back to the system when freed (peak
    memory is then measured per case, not hidden by memory an earlier case left cached)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        MALLOC_MMAP_THRESHOLD_="131072",
        MALLOC_TRIM_THRESHOLD_="262144",
    )
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class Worker:
    """One worker process and the case it is decoding."""

    def __init__(
        self,
        number: int,
        workdir: Path,
        targets: list[str],
        memory_mib: int,
        build: str | None = None,
    ) -> None:
        self.number = number
        self.log_path = workdir / f"worker-{number}.log"
        command = [
            sys.executable,
            "-m",
            "featcodec.eval.fuzz_worker",
            str(workdir),
            ",".join(targets),
            str(memory_mib),
            *([build] if build else []),
        ]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=worker_env(),
                bufsize=0,
            )
        self.buffer = bytearray()
        self.ready: dict[str, Any] | None = None
        self.case: Case | None = None
        self.deadline = time.monotonic() + STARTUP_S

    def send(self, case: Case, index: int, limit_s: float) -> None:
        assert self.proc.stdin is not None
        self.case = case
        self.deadline = time.monotonic() + 2 * limit_s + GRACE_S
        try:
            self.proc.stdin.write(REQUEST.pack(case.id, index, len(case.data)) + case.data)
        except BrokenPipeError:
            pass  # it died: its stdout's end tells

    def messages(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        """The complete replies received with ``chunk``."""
        self.buffer += chunk
        while len(self.buffer) >= REPLY.size:
            (n,) = REPLY.unpack_from(self.buffer)
            if len(self.buffer) < REPLY.size + n:
                return
            body = bytes(self.buffer[REPLY.size : REPLY.size + n])
            del self.buffer[: REPLY.size + n]
            yield json.loads(body)

    def stop(self, kill: bool = False) -> str:
        """End the process; returns how it ended (exit code or signal)."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_bytes()[-LOG_TAIL:].decode("utf-8", "replace")
        except OSError:
            return ""


Record = Callable[[Case, dict[str, Any]], None]


def run_pool(
    cases: Iterator[Case],
    targets: list[str],
    workdir: Path,
    workers: int,
    limit_s: float,
    memory_mib: int,
    record: Record,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    build: str | None = None,
) -> None:
    """Decode every case in a pool of ``workers`` processes; ``record(case, reply)`` gets each
    outcome (a worker's reply, or ``{"outcome": "hang"|"crash", ...}`` from the pool) and
    ``on_ready`` each worker's ready message. The first worker builds the seeds as ``build``
    says (:mod:`eval.fuzz_worker`); the cases are asked for once a worker is ready."""
    index = {name: i for i, name in enumerate(targets)}
    selector = selectors.DefaultSelector()
    pool: list[Worker] = []
    started = 0

    def start() -> Worker:
        nonlocal started
        w = Worker(started, workdir, targets, memory_mib, build if started == 0 else None)
        started += 1
        assert w.proc.stdout is not None
        selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        pool.append(w)
        return w

    def replace(w: Worker, outcome: str, kill: bool) -> None:
        selector.unregister(w.proc.stdout)
        pool.remove(w)
        how = w.stop(kill)
        if w.ready is None:
            raise RuntimeError(f"fuzz worker {w.number} failed to start ({how}):\n{w.log_tail()}")
        if w.case is not None:
            wait = 2 * limit_s + GRACE_S
            detail = f"worker {how}" if outcome == "crash" else f"no answer in {wait:g} s"
            record(w.case, {"outcome": outcome, "message": detail, "log": w.log_tail()})
            log.info("fuzz case %d (%s, %s): %s", w.case.id, w.case.target, w.case.mutator, detail)
        start()

    for _ in range(workers):
        start()
    pending = iter(cases)
    exhausted = False
    try:
        while True:
            for w in pool:
                if w.ready is not None and w.case is None and not exhausted:
                    case = next(pending, None)
                    if case is None:
                        exhausted = True
                    else:
                        w.send(case, index[case.target], limit_s)
            if exhausted and all(w.case is None for w in pool):
                return
            wait = max(0.0, min(w.deadline for w in pool) - time.monotonic())
            for key, _ in selector.select(timeout=min(wait, 1.0)):
                w = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    replace(w, "crash", kill=False)
                    continue
                for message in w.messages(chunk):
                    if message.get("ready"):
                        w.ready, w.deadline = message, float("inf")
                        if on_ready is not None:
                            on_ready(message)
                        continue
                    assert w.case is not None and message["id"] == w.case.id
                    case, w.case = w.case, None
                    w.deadline = float("inf")
                    record(case, message)
            now = time.monotonic()
            for w in list(pool):
                if now > w.deadline and w in pool:
                    replace(w, "hang", kill=True)
    finally:
        for w in pool:
            w.stop(kill=w.case is not None or w.ready is None)
        selector.close()
