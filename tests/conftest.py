"""Shared fixtures: small models and checkpoints built once per session."""

from __future__ import annotations

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from codec.facade import Codec, default_arch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


TINY = {"name": "hyperprior", "N": 16, "M": 16, "downsample": 1, "attention": False}


@pytest.fixture(scope="session")
def tiny_arch() -> dict:
    return default_arch(codec=dict(TINY))


@pytest.fixture(scope="session")
def tiny_codec(tiny_arch: dict) -> Codec:
    torch.manual_seed(0)
    return Codec.build(tiny_arch).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_codec: Codec, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    tiny_codec.save(path)
    return path
