"""``featcodec --help``, ``info`` and the error paths start at once: they import neither
torch nor compressai (nor numpy, Lightning, OpenCV), and ``import featcodec`` neither."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
HEAVY = ("torch", "compressai", "numpy", "lightning", "cv2", "PIL")

PROBE = """
import json, sys
import featcodec
from featcodec.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _probe(*argv: str, cwd: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "stderr": run.stderr}


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["info", str(LEGACY / "scalable.fcb"), str(LEGACY / "video.fcb")],
        ["info", "--json", str(LEGACY / "video.fcb")],
        ["encode", "missing.png", "-c", "missing.ckpt", "-o", "out"],
        ["encode", str(LEGACY / "scalable.fcb"), "-c", "missing.ckpt", "-o", "out"],
        ["decode", "missing.fcb", "-c", "missing.ckpt", "-o", "out"],
        ["eval", "rd", "--bogus"],
    ],
)
def test_no_heavy_import(argv: list[str], tmp_path: Path) -> None:
    result = _probe(*argv, cwd=tmp_path)
    assert result["heavy"] == [], result
    if argv[0] == "--help" or argv[0] == "info":
        assert result["code"] == 0, result["stderr"]
    else:
        assert result["code"] != 0
        assert len(result["stderr"].strip().splitlines()) <= 3  # one line (argparse: usage too)


def test_a_corrupt_stream_is_reported_by_info_without_torch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fcb"
    bad.write_bytes((LEGACY / "scalable.fcb").read_bytes()[:-5])
    result = _probe("info", str(bad), cwd=tmp_path)
    assert result["code"] == 1 and result["heavy"] == []
    assert result["stderr"].strip().splitlines() == [
        f"featcodec: error: {bad}: truncated stream: 478 bytes, the header announces 483"
    ]


def test_the_lazy_api_resolves() -> None:
    import featcodec

    assert {"load", "get_codec", "list_codecs", "Codec", "VideoCodec"} <= set(dir(featcodec))
    assert featcodec.load.__module__ == "featcodec.api"
    with pytest.raises(AttributeError):
        featcodec.no_such_name  # noqa: B018
