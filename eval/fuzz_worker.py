"""A fuzzing worker: a long-lived process that decodes the cases :mod:`eval.fuzz` sends it.

``python -m featcodec.eval.fuzz_worker WORKDIR TARGETS MEMORY_MIB [BUILD]`` loads the seed
codecs of ``WORKDIR`` once (:func:`eval.fuzz_seeds.load_targets`; ``TARGETS`` comma-separated)
— with ``BUILD`` (JSON: seed, size, backbone) it first builds them
(:func:`eval.fuzz_seeds.build_seeds`), else it waits for them — measures each target's
legitimate decode, caps its address space ``MEMORY_MIB`` above what it holds then (0: no cap)
and serves requests on stdin until it closes. Torch runs on one thread (``OMP_NUM_THREADS=1``,
set by the pool that starts it). This module imports neither torch nor a codec itself, so the
process that drives the workers starts at once.

Protocol: a request is :data:`REQUEST` (case id, target index, length) and the case bytes; a
reply is :data:`REPLY` (length) and a JSON object. The first reply is ``{"ready": ...}`` with
the legitimate decodes' time and memory; each later one carries the case id, ``outcome``
(``error``, ``ok-unchanged``, ``ok-partial``, ``ok-changed``, ``memory``,
``other-exception``), ``time`` and ``cpu`` (wall and CPU seconds), ``growth`` (bytes of peak
resident memory above the resident memory before the case), ``rss`` (resident bytes before
it) and, for an exception, its type, message and traceback; for a documented error,
``stage``: whether the container refused the stream or a decoder did.
The original stdout is kept for replies; anything printed goes to stderr (the worker's log).
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import resource
import signal
import struct
import sys
import time
import traceback
from typing import IO, Any

TARGETS: dict[str, tuple[str, dict[str, str]]] = {
    "image": ("image", {"layers": "all"}),
    "scalable": ("scalable", {"layers": "all"}),
    "scalable-base": ("scalable", {"layers": "base"}),
    "video": ("video", {"on_error": "raise"}),
    "video-resume": ("video", {"on_error": "resume"}),
}
"""Decode targets: the seed stream each one mutates (image, scalable: base + enhancement,
video: I- and P-frames) and the decode call's options (``scalable-base`` decodes the scalable
stream with ``layers="base"``, ``video-resume`` the video one with ``on_error="resume"``)."""

SELFTEST = "selftest"
"""A target without a codec whose "decode" obeys the case bytes (``crash``, ``hang``,
``raise``, ``error``, ``memory:MiB``, ``ok``, ``changed``): it checks the fuzzer's own
classification of each outcome."""

BACKBONE = "fuzz_tinynet"
"""The seed codecs' default task network (:class:`eval.fuzz_seeds.FuzzNet`); any backbone
name works (``scene_resnet10``: real size, slower)."""

MANIFEST = "manifest.json"
WAIT_S = 600.0
"""How long a worker waits for another one to build the seeds."""

DOCUMENTED_REPLIES = ("error", "ok-unchanged", "ok-partial")
"""Worker outcomes that are documented whatever the mutation (``ok-changed`` is only for a
forgery: :mod:`eval.fuzz`)."""

REQUEST = struct.Struct("<IBI")
REPLY = struct.Struct("<I")
MESSAGE_CHARS = 500
ALLOCATION_FAILED = ("not enough memory", "can't allocate memory", "cannot allocate memory")


def status() -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` and ``VmSize`` of this process in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset this process's peak resident memory to its current one (``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measured(call: Any, *args: Any) -> tuple[Any, BaseException | None, float, int, float]:
    """``call(*args)``'s result or exception, seconds, peak memory growth in bytes and CPU
    seconds (of the whole process: one torch thread)."""
    before = status()["VmRSS"]
    reset = reset_peak()
    if not reset:  # without clear_refs only a new peak of the process shows
        before = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    start, cpu = time.perf_counter(), time.process_time()
    result: Any = None
    error: BaseException | None = None
    try:
        result = call(*args)
    except Exception as e:
        error = e
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = status()["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result, error, elapsed, max(0, peak - before), cpu


def run_case(target: Any, data: bytes) -> dict[str, Any]:
    """Decode ``data`` with ``target`` and classify the outcome (see the module docstring)."""
    from featcodec.codec.errors import FeatcodecError

    result, error, elapsed, growth, cpu = measured(target.decode, data)
    reply: dict[str, Any] = {"time": elapsed, "cpu": cpu, "growth": growth}
    if error is None:
        reply["outcome"] = target.judge(result)
        return reply
    message = str(error).strip()
    reply["type"], reply["message"] = type(error).__name__, message[:MESSAGE_CHARS]
    if isinstance(error, FeatcodecError):
        reply["outcome"] = "error"
        if hasattr(target, "container_accepts"):
            reply["stage"] = "decoder" if target.container_accepts(data) else "container"
        if "\n" in message:  # a documented error is one line
            reply["outcome"] = "other-exception"
    elif isinstance(error, MemoryError) or any(m in message.lower() for m in ALLOCATION_FAILED):
        reply["outcome"] = "memory"
    else:
        reply["outcome"] = "other-exception"
    if reply["outcome"] != "error":
        tb = traceback.format_exception(type(error), error, error.__traceback__)
        reply["traceback"] = "".join(tb)[-4000:]
    return reply


class SelfTest:
    """The :data:`SELFTEST` target."""

    name = SELFTEST
    seed_bytes = b"ok"
    cold_growth = 0

    def decode(self, data: bytes) -> tuple[str]:
        """Does what ``data`` says (see :data:`SELFTEST`)."""
        from featcodec.codec.errors import BitstreamError

        command, _, arg = data.decode("ascii", "replace").partition(":")
        if command == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if command == "hang":
            time.sleep(3600)
        if command == "raise":
            raise KeyError("a non-documented exception")
        if command == "error":
            raise BitstreamError("a documented error")
        if command == "memory":
            block = b"\x01" * (int(arg or 256) << 20)  # written, so resident
            return ("ok",) if block else ("",)
        return (command,)

    def judge(self, result: tuple[str]) -> str:
        return "ok-unchanged" if result == ("ok",) else "ok-changed"


def load(workdir: str, names: list[str], build: str | None) -> list[Any]:
    """The targets ``names``: build or wait for the seeds first unless all are selftests."""
    if all(n == SELFTEST for n in names):
        return [SelfTest() for _ in names]
    manifest = os.path.join(workdir, MANIFEST)
    if build and not os.path.isfile(manifest):
        from featcodec.eval.fuzz_seeds import build_seeds

        spec = json.loads(build)
        build_seeds(workdir, spec["seed"], tuple(spec["size"]), spec["backbone"])
    deadline = time.monotonic() + WAIT_S
    while not os.path.isfile(manifest):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no seeds in {workdir} after {WAIT_S:g} s")
        time.sleep(0.1)
    from featcodec.eval.fuzz_seeds import load_targets

    loaded = iter(load_targets(workdir, [n for n in names if n != SELFTEST]))
    return [SelfTest() if n == SELFTEST else next(loaded) for n in names]


def legitimate(target: Any, repeat: int = 3) -> dict[str, float]:
    """The seed stream's decode, ``repeat`` times: its longest time and its memory growth, the
    largest of these and of the codec's first (cold) decode: what a fresh process decoding a
    legitimate stream needs beyond loading the model."""
    runs = [measured(target.decode, target.seed_bytes) for _ in range(repeat)]
    for _, error, *_ in runs:
        if error is not None:
            raise RuntimeError(f"the seed stream of {target.name} does not decode: {error}")
    warm = max(r[3] for r in runs)
    return {
        "time": max(r[2] for r in runs),
        "growth": max(warm, target.cold_growth),
        "warm_growth": warm,
    }


def limit_memory(mib: int) -> int:
    """Cap the address space ``mib`` MiB above the current size; returns the cap (0: none)."""
    if mib <= 0:
        return 0
    cap = status()["VmSize"] + (mib << 20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


def threads() -> int | None:
    """Torch's CPU threads in this process (None when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def send(channel: IO[bytes], message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    channel.write(REPLY.pack(len(body)) + body)
    channel.flush()


def read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    """``n`` bytes from ``stream``, or None at its end."""
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    """Serve cases until stdin closes (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    workdir, names, memory_mib = args[0], args[1].split(","), int(args[2])
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray output goes to the log, never into the replies
    faulthandler.enable()
    targets = load(workdir, names, args[3] if len(args) > 3 else None)
    legit = {t.name: legitimate(t) for t in targets}
    gc.collect()
    gc.freeze()  # the loaded modules' objects: no full collection pauses a case to scan them
    cap = limit_memory(memory_mib)
    send(
        channel,
        {
            "ready": True,
            "pid": os.getpid(),
            "threads": threads(),
            "legit": legit,
            "rss": status()["VmRSS"],
            "peak_reset": reset_peak(),
            "address_cap": cap,
        },
    )
    stdin = sys.stdin.buffer
    while True:
        head = read_exactly(stdin, REQUEST.size)
        if head is None:
            return 0
        case_id, index, n = REQUEST.unpack(head)
        data = read_exactly(stdin, n)
        if data is None:
            return 0
        rss = status()["VmRSS"]
        reply = run_case(targets[index], data)
        reply["id"], reply["rss"] = case_id, rss
        send(channel, reply)


if __name__ == "__main__":
    sys.exit(main())
