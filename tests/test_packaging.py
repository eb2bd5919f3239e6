"""The package installs under one import root, ``featcodec``: the wheel holds nothing else,
and an installed (non-editable) wheel works beside a user's own ``models/`` package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BARE = {"codec", "models", "training", "eval"}
SOURCES = ("codec", "models", "training", "eval", "featcodec", "tests")
LEGACY_SCRIPT = REPO / "tests" / "fixtures" / "legacy" / "make_fixtures.py"  # kept as written


def _bare_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names]
    return [f for f in found if f.split()[-1].split(".")[0] in BARE]


def test_nothing_imports_the_bare_folder_names() -> None:
    files = [p for d in SOURCES for p in (REPO / d).rglob("*.py") if p != LEGACY_SCRIPT]
    assert len(files) > 50
    bad = [hit for p in files for hit in _bare_imports(p)]
    assert not bad, f"import featcodec.<package> instead: {bad}"


def _uv() -> str:
    uv = Path(sys.executable).with_name("uv")
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a clean copy of the sources: a build/ folder left by an earlier build would
    # slip its stale files into the wheel
    source = tmp_path_factory.mktemp("source") / "featcodec"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", "*.so"
        ),
    )
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (found,) = out.glob("featcodec-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_only_featcodec(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
        names = z.namelist()
    name, version = wheel.name.split("-")[:2]
    assert tops == {"featcodec", f"{name}-{version}.dist-info"}
    # every package of the sources is in the wheel, under featcodec
    for root in ("featcodec", "codec", "models", "training", "eval"):
        for init in (REPO / root).rglob("__init__.py"):
            inside = init.relative_to(REPO).as_posix()
            wanted = inside if root == "featcodec" else f"featcodec/{inside}"
            assert wanted in names, f"{inside} is not packaged (pyproject.toml packages)"
    assert any(n.startswith("featcodec/codec/bounded_rans") and n.endswith(".so") for n in names)


USER_SCRIPT = """
import sys
import models.yolo                      # the user's own package, imported first
import torch
from featcodec.codec.facade import Codec
import featcodec
assert "site-packages" in featcodec.__file__, featcodec.__file__
codec = Codec.from_checkpoint(sys.argv[1])
data = codec.encode(torch.rand(3, 32, 40))
decoded = codec.decode(data)
assert decoded.features.shape == (1, 128, 4, 5), decoded.features.shape
import models.yolo as again, training
assert again.WHO == "user" and training.WHO == "user" and eval("1 + 1") == 2
print("ok", len(data))
"""


@pytest.mark.slow
def test_an_installed_wheel_works_beside_a_user_models_package(
    wheel: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel)],
        check=True,
        timeout=300,
    )
    # the dependencies (torch, ...) come from this environment's site-packages, added as a
    # plain path: its .pth files, the editable install of this checkout among them, are not run
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    user = tmp_path / "project"
    for package in ("models", "training"):
        (user / package).mkdir(parents=True)
        (user / package / "__init__.py").write_text('WHO = "user"\n')
    (user / "models" / "yolo.py").write_text('WHO = "user"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = subprocess.run(
        [str(python), "-c", USER_SCRIPT, str(tiny_checkpoint)],
        cwd=user,
        env={**env, "PYTHONPATH": str(user)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok")
    # the console command of the wheel, run from the user's folder
    image = user / "in.png"
    from PIL import Image

    Image.new("RGB", (40, 32), (90, 30, 200)).save(image)
    cli = subprocess.run(
        [
            str(venv / "bin" / "featcodec"),
            "encode",
            str(image),
            "-c",
            str(tiny_checkpoint),
            "-o",
            str(user / "out"),
        ],
        cwd=user,
        env={**env, "PYTHONPATH": str(user)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert (user / "out" / "in.fcb").is_file()


def test_library_code_neither_prints_nor_sets_process_state() -> None:
    """Only the command (featcodec/cli) prints, pins threads or sets process-wide state; the
    library logs (logging.getLogger(__name__)) and leaves threads and the umask alone."""
    banned = {"print", "set_num_threads", "umask", "set_flush_denormal", "filterwarnings"}
    found = []
    for root in ("codec", "models", "training", "eval"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                    if name in banned:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not found, found


TASK_NAMES = {"classification", "segmentation", "depth", "keypoints", "detection"}


def test_no_task_name_branches_outside_the_task_files() -> None:
    """A task is an object: nothing outside models/tasks/ compares a value to a task's name."""
    found = []
    for root in ("codec", "models", "training", "eval", "featcodec"):
        for path in (REPO / root).rglob("*.py"):
            if "tasks" in path.relative_to(REPO).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                # a comparison of a task (or an enhancement target) with a task's name; batch
                # keys that share a name ("depth" in batch) are data, not a task branch
                if not isinstance(node, ast.Compare) or not any(
                    w in ast.unparse(node).lower() for w in ("task", "target")
                ):
                    continue
                for side in (node.left, *node.comparators):
                    values = (
                        side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                    )
                    for v in values:
                        if isinstance(v, ast.Constant) and v.value in TASK_NAMES:
                            found.append(f"{path.relative_to(REPO)}:{node.lineno} {v.value!r}")
    assert not found, found


def test_no_import_of_another_modules_private_name() -> None:
    found = []
    for root in ("codec", "models", "training", "eval", "featcodec", "tests"):
        for path in (REPO / root).rglob("*.py"):
            if path == LEGACY_SCRIPT:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featcodec"):
                    parts = [*node.module.split("."), *(a.name for a in node.names)]
                    if any(p.startswith("_") and not p.startswith("__") for p in parts):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found


def test_no_source_file_over_500_lines() -> None:
    long = []
    for root in ("codec", "models", "training", "eval", "featcodec", "tests"):
        for path in (REPO / root).rglob("*.py"):
            n = len(path.read_text().splitlines())
            if n > 500:
                long.append(f"{path.relative_to(REPO)}: {n}")
    assert not long, long
