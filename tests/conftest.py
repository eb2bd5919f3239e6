"""Shared fixtures: small models and checkpoints built once per session."""

from __future__ import annotations

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from featcodec.codec.facade import Codec, default_arch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


TINY = {"name": "hyperprior", "N": 16, "M": 16, "downsample": 1, "attention": False}


class FixtureTinyNet(torch.nn.Module):
    """A classifier small enough for committed checkpoints (tests/fixtures/legacy): stride 8
    and 16 channels at ``layer2``."""

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.layer2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes or 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(torch.relu(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def register_fixture_backbone() -> str:
    """Register :class:`FixtureTinyNet` as ``fixture_tinynet`` (once); returns the name."""
    from featcodec.models.backbones import available_backbones, register_backbone

    if "fixture_tinynet" not in available_backbones():
        register_backbone("fixture_tinynet", FixtureTinyNet)
    return "fixture_tinynet"


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
