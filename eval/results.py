"""The rate–distortion results file: one row per (codec, rate point), traceable to its source.

``featcodec eval rd`` writes ``NAME.json`` and ``NAME.csv`` side by side. The JSON holds::

    {"format": "featcodec-rd", "version": 1, "created": ISO time,
     "software": {python, featcodec, torch, ..., ffmpeg, git commit},
     "dataset": {name, split, size, image_size, seed},
     "task": "classification", "metric": "accuracy",
     "rows": [RDRow, ...]}

Every row carries its codec's config and fingerprint (the ``.fcb`` model fingerprint for a
learned codec, a digest of the task network for an anchor), so a figure can be traced back to
the exact model and software that made it. The CSV repeats the rows with the metrics flattened
to columns, for spreadsheets.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from featcodec.codec.errors import InputError
from featcodec.codec.files import atomic_write
from featcodec.eval.bd import Curve

RESULTS_FORMAT = "featcodec-rd"
RESULTS_VERSION = 1
RATE_KEYS = ("bpp", "bits_per_element")
_PACKAGES = ("featcodec", "torch", "torchvision", "compressai", "numpy", "lightning", "pillow")


@dataclass
class RDRow:
    """One rate point of one codec, averaged over the images of a dataset split.

    Attributes:
        codec: curve name (``"hyperprior"``, ``"x265-12bit"``, a run folder's name…).
        point: label of the point (``"λ=4"``, ``"qp=30"``).
        kind: ``"learned"`` or ``"anchor"``.
        setting: the swept parameter (λ, QP, quality…) when known.
        images: images coded.
        bytes: mean bytes per image of the real streams (headers included).
        bpp: bits per input pixel, from ``bytes``.
        bits_per_element: bits per element of the coded feature tensor, from ``bytes``.
        metrics: task metrics on the decoded tensors, e.g. ``{"accuracy": 0.94}``.
        reference: the same metrics of the uncompressed network on the same images.
        psnr: mean PSNR (dB) of the reconstructed image, when the codec codes images.
        bpp_estimated: −Σlog₂p of the latents per pixel (learned codecs; an estimate).
        encode_ms, decode_ms: mean wall time per image (encode: front + coding;
            decode: decoding + back end).
        checkpoint: the checkpoint file, for learned codecs.
        fingerprint: model fingerprint (hex).
        config: the codec's architecture or the anchor's settings.
    """

    codec: str
    point: str
    kind: str
    setting: float | None
    images: int
    bytes: float
    bpp: float
    bits_per_element: float
    metrics: dict[str, float]
    reference: dict[str, float]
    psnr: float | None = None
    bpp_estimated: float | None = None
    encode_ms: float = math.nan
    decode_ms: float = math.nan
    checkpoint: str | None = None
    fingerprint: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Results:
    """A loaded results file."""

    path: str
    task: str
    metric: str
    dataset: dict[str, Any]
    software: dict[str, Any]
    rows: list[RDRow]
    created: str = ""

    def codecs(self) -> list[str]:
        """Curve names in order of first appearance."""
        return list(dict.fromkeys(r.codec for r in self.rows))


def software_versions(ffmpeg: bool = False) -> dict[str, str | None]:
    """Versions of Python, the project and its main dependencies (and ffmpeg, if asked)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["git_commit"] = _run_first_line(["git", "rev-parse", "HEAD"], Path(__file__).parent)
    if ffmpeg:
        versions["ffmpeg"] = _run_first_line(["ffmpeg", "-hide_banner", "-version"])
    return versions


def _run_first_line(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else None


def write_results(
    path: str | os.PathLike[str],
    rows: list[RDRow],
    *,
    task: str,
    metric: str,
    dataset: dict[str, Any],
    software: dict[str, Any],
) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the same stem ``.csv``, atomically; returns both paths."""
    json_path = Path(path)
    if json_path.suffix != ".json":
        raise InputError(f"{path}: the results file must end in .json")
    doc = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "software": software,
        "dataset": dataset,
        "task": task,
        "metric": metric,
        "rows": [r.as_dict() for r in rows],
    }
    csv_path = json_path.with_suffix(".csv")
    atomic_write(csv_path, _csv(rows))
    atomic_write(json_path, json.dumps(doc, indent=2, allow_nan=True))
    return json_path, csv_path


def _csv(rows: list[RDRow]) -> str:
    metric_names = list(dict.fromkeys(k for r in rows for k in r.metrics))
    scalar = [
        "codec",
        "point",
        "kind",
        "setting",
        "images",
        "bytes",
        "bpp",
        "bits_per_element",
        "psnr",
        "bpp_estimated",
        "encode_ms",
        "decode_ms",
    ]
    header = [
        *scalar,
        *metric_names,
        *(f"{m}_uncompressed" for m in metric_names),
        "fingerprint",
        "checkpoint",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        d = r.as_dict()
        writer.writerow(
            [
                *(d[k] for k in scalar),
                *(r.metrics.get(m) for m in metric_names),
                *(r.reference.get(m) for m in metric_names),
                r.fingerprint,
                r.checkpoint,
            ]
        )
    return buf.getvalue()


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read and validate a results file; every problem is an :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"results file not found: {path}")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not a JSON results file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        hint = (
            " (an older featcodec's demo results: re-run `featcodec eval rd` on its run folder)"
            if isinstance(doc, dict) and "points" in doc
            else ""
        )
        raise InputError(f"{path} is not a featcodec RD results file{hint}")
    version = doc.get("version")
    if version != RESULTS_VERSION:
        raise InputError(
            f"{path} has results format version {version}; this featcodec reads version "
            f"{RESULTS_VERSION} (re-run `featcodec eval rd`)"
        )
    try:
        rows = [RDRow(**r) for r in doc["rows"]]
        return Results(
            path=str(p),
            task=doc["task"],
            metric=doc["metric"],
            dataset=doc["dataset"],
            software=doc["software"],
            rows=rows,
            created=doc.get("created", ""),
        )
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: malformed results ({e})") from None


def curves(results: list[Results], metric: str, rate: str = "bpp") -> list[Curve]:
    """One :class:`~eval.bd.Curve` per codec across ``results``, sorted by rate.

    A codec name that appears in more than one file is suffixed with the file's stem.
    """
    if rate not in RATE_KEYS:
        raise InputError(f"unknown rate {rate!r}; use one of {', '.join(RATE_KEYS)}")
    seen: dict[str, int] = {}
    for res in results:
        for name in res.codecs():
            seen[name] = seen.get(name, 0) + 1
    out: list[Curve] = []
    for res in results:
        for name in res.codecs():
            rows = [r for r in res.rows if r.codec == name]
            if any(metric not in r.metrics for r in rows):
                known = ", ".join(sorted({k for r in res.rows for k in r.metrics}))
                raise InputError(f"{res.path}: no metric {metric!r} for {name} (has: {known})")
            rows.sort(key=lambda r: getattr(r, rate))
            label = name if seen[name] == 1 else f"{name} ({Path(res.path).stem})"
            out.append(
                Curve(label, [getattr(r, rate) for r in rows], [r.metrics[metric] for r in rows])
            )
    return out
