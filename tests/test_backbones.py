"""Tests for models.backbones: building backbones by name and splitting them into front/back."""

from __future__ import annotations

import math

import pytest
import torch
from torch import fx, nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet50_Weights

from featcodec.models import (
    DEFAULT_SPLITS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    Split,
    build_backbone,
    resolve_weights,
    split_backbone,
    split_model,
    split_nodes,
)

# backbone -> (stride, channels) at its default split point
EXPECTED = {
    "resnet18": (8, 128),
    "resnet34": (8, 128),
    "resnet50": (8, 512),
    "mobilenet_v3_large": (8, 40),
    "scene_resnet10": (8, 128),
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[nn.Module, Split]]:
    """Each backbone (random weights, eval mode) with its default split, built once."""
    torch.manual_seed(0)
    out: dict[str, tuple[nn.Module, Split]] = {}
    for name in EXPECTED:
        model = build_backbone(name).eval()
        out[name] = (model, split_model(model, DEFAULT_SPLITS[name], name=name))
    return out


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18").eval()


def _images(b: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))


def test_default_splits_cover_backbones() -> None:
    assert set(EXPECTED) <= set(DEFAULT_SPLITS)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_default_split_stride_channels(
    built: dict[str, tuple[nn.Module, Split]], name: str
) -> None:
    _, split = built[name]
    assert (split.stride, split.channels) == EXPECTED[name]
    assert split.node == DEFAULT_SPLITS[name]
    assert split.backbone == name
    assert isinstance(split.back, fx.GraphModule)


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_front_shape_and_back_reproduces_model(
    built: dict[str, tuple[nn.Module, Split]], name: str, size: tuple[int, int]
) -> None:
    model, split = built[name]
    split.front.eval()
    split.back.eval()
    h, w = size
    x = _images(2, h, w)
    with torch.no_grad():
        feats = split.front(x)
        assert isinstance(feats, torch.Tensor)
        s = split.stride
        assert feats.shape == (2, split.channels, math.ceil(h / s), math.ceil(w / s))
        assert feats.shape[1:] == split.feature_shape(h, w)
        torch.testing.assert_close(split.back(feats), model(x))


def test_split_inside_block_at_add_node(resnet18: nn.Module) -> None:
    split = split_model(resnet18, "layer2.0.add", name="resnet18")
    assert (split.stride, split.channels) == (8, 128)
    x = _images(1, 64, 64)
    with torch.no_grad():
        feats = split.front.eval()(x)
        assert feats.shape == (1, 128, 8, 8)
        torch.testing.assert_close(split.back.eval()(feats), resnet18(x))


def test_module_prefix_is_last_node_of_module(resnet18: nn.Module) -> None:
    x = _images(1, 64, 64)
    by_prefix = split_model(resnet18, "layer2")
    by_node = split_model(resnet18, "layer2.1.relu_1")
    with torch.no_grad():
        torch.testing.assert_close(by_prefix.front.eval()(x), by_node.front.eval()(x))


def test_non_cut_raises(resnet18: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"not a cut of resnet18.*still needs.*layer1\.1\.relu_1"):
        split_model(resnet18, "layer2.0.conv1", name="resnet18")


def test_unknown_node_raises(resnet18: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown split point 'layer9'"):
        split_model(resnet18, "layer9", name="resnet18")


def test_non_spatial_split_raises(resnet18: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"not a \(B, C, H, W\) feature map"):
        split_model(resnet18, "fc")


def test_unknown_backbone_raises() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet81'.*resnet18"):
        build_backbone("resnet81")
    with pytest.raises(ValueError, match="unknown backbone"):
        split_backbone("no_such_net", "layer2")


def test_input_split_is_identity(resnet18: nn.Module) -> None:
    split = split_model(resnet18, "input", name="resnet18")
    assert isinstance(split.front, nn.Identity)
    assert split.back is resnet18
    assert (split.stride, split.channels) == (1, 3)
    x = _images(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(split.back(split.front(x)), resnet18(x))


def test_state_dict_keys_deterministic_and_from_model() -> None:
    def keys(split: Split) -> tuple[list[str], list[str]]:
        return list(split.front.state_dict()), list(split.back.state_dict())

    torch.manual_seed(0)
    a = split_backbone("scene_resnet10", "layer2")
    b = split_backbone("scene_resnet10", "layer2")
    assert keys(a) == keys(b)
    front, back = keys(a)
    model_keys = set(build_backbone("scene_resnet10").state_dict())
    assert "conv1.weight" in front and "fc.weight" in back
    assert set(front).isdisjoint(back)
    assert set(front) | set(back) == model_keys


def test_split_keeps_training_modes(resnet18: nn.Module) -> None:
    resnet18.train()
    resnet18.layer1.eval()  # e.g. frozen batch norms
    try:
        split = split_model(resnet18, "layer2")
        assert resnet18.training and resnet18.layer2.training
        assert not resnet18.layer1.training
        assert split.front.training and split.back.training
    finally:
        resnet18.eval()


def test_gradients_flow_through_frozen_back(resnet18: nn.Module) -> None:
    split = split_model(resnet18, "layer2")
    back = split.back.eval()
    for p in back.parameters():
        p.requires_grad_(False)
    try:
        feats = torch.randn(2, 128, 4, 4, requires_grad=True)
        back(feats).logsumexp(dim=1).sum().backward()
        assert feats.grad is not None
        assert feats.grad.abs().sum() > 0
    finally:
        for p in back.parameters():
            p.requires_grad_(True)


def test_normalize() -> None:
    norm = Normalize()
    assert len(norm.state_dict()) == 0
    x = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    torch.testing.assert_close(norm(x), torch.zeros(2, 3, 4, 5))
    y = norm(torch.ones(1, 3, 2, 2))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(y[0, :, 0, 0], expected)


def test_normalize_in_split_model_adds_no_state() -> None:
    model = nn.Sequential(Normalize(), build_backbone("scene_resnet10")).eval()
    split = split_model(model, "1.layer2")
    assert set(split.front.state_dict()) | set(split.back.state_dict()) == set(model.state_dict())
    x = _images(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(split.back.eval()(split.front.eval()(x)), model(x))


def test_resolve_weights_without_download() -> None:
    assert resolve_weights("resnet18", None) is None
    assert resolve_weights("resnet18", "DEFAULT") is ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("resnet50", "DEFAULT") is ResNet50_Weights.IMAGENET1K_V2
    assert resolve_weights("resnet50", "IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert resolve_weights("ResNet50", "ResNet50_Weights.IMAGENET1K_V1") is (
        ResNet50_Weights.IMAGENET1K_V1
    )
    assert resolve_weights("mobilenet_v3_large", "DEFAULT") is (
        MobileNet_V3_Large_Weights.IMAGENET1K_V2
    )
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET9K")


def test_scene_resnet10_has_no_weights() -> None:
    with pytest.raises(ValueError, match="scene_resnet10.*without pretrained weights"):
        build_backbone("scene_resnet10", weights="DEFAULT")
    with pytest.raises(ValueError, match="without pretrained weights"):
        split_backbone("scene_resnet10", "layer2", weights="IMAGENET1K_V1")


def test_num_classes_passes_through() -> None:
    assert build_backbone("scene_resnet10").fc.out_features == 5
    assert build_backbone("scene_resnet10", num_classes=3).fc.out_features == 3
    assert build_backbone("resnet18", num_classes=7).fc.out_features == 7


def test_split_nodes(resnet18: nn.Module) -> None:
    names = split_nodes(resnet18)
    assert names[0] == "x" and "layer2.0.conv1" in names and names[-1] == "fc"
    cuts = split_nodes(resnet18, cuts_only=True)
    assert "layer2.0.add" in cuts and "layer1.1.relu_1" in cuts
    assert "layer2.0.conv1" not in cuts
    assert set(cuts) < set(names)
