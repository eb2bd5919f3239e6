"""Inputs of ``featcodec eval motion`` (:mod:`eval.motion`): the reference image and the front
of the split network, each failure reported as a one-line ``InputError``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from featcodec.codec.errors import InputError
from featcodec.models.backbones import Normalize, build_backbone, resolve_weights
from featcodec.models.split import split_model
from featcodec.training.datasets.files import one_line, read_rgb, require_file
from featcodec.training.datasets.resize import resize_item
from featcodec.training.datasets.synthetic import render_scene


def load_image(path: str | None, size: int, seed: int) -> tuple[Tensor, str]:
    """The normalized reference image (1, 3, size, size) and a description of its source.

    A given file is stretched to ``size × size`` (bilinear, antialiased), whatever its aspect
    ratio: one fixed square size keeps the stride an integer and the runs comparable. Without
    a file, synthetic scene ``seed`` is rendered at that size."""
    if path is None:
        image, source = render_scene(seed, size).image, f"synthetic scene {seed} ({size} px)"
    else:
        image = read_rgb(path)
        h, w = image.shape[-2:]
        image = resize_item({"image": image}, size)["image"]
        source = f"{path} ({w}×{h} stretched to {size}×{size})"
    return Normalize()(image.unsqueeze(0)), source


def weights_from_file(model: nn.Module, path: str, backbone: str) -> None:
    """Load a state_dict of the whole backbone (optionally under a ``"state_dict"`` key)."""
    p = require_file(path, "weights file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors alike
        raise InputError(f"{p}: cannot read as a torch state dict ({one_line(e)[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{p}: not a state dict (a mapping of names to tensors)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [
            f"{len(keys)} {what} (e.g. {keys[0]!r})"
            for keys, what in (
                (missing, "missing keys"),
                (unexpected, "unexpected keys"),
                (wrong, "tensors of another shape"),
            )
            if keys
        ]
        raise InputError(f"{p}: not a {backbone} state dict: {', '.join(parts)}")
    model.load_state_dict(state)


def load_front(
    backbone: str, layer: str, weights: str | None, weights_file: str | None, seed: int
) -> tuple[nn.Module, str, int]:
    """The front of ``backbone`` up to ``layer``, in eval mode, a description of its weights,
    and the layer's stride (measured on a 224 px probe). Random init (no weights) is seeded
    with ``seed``.

    ``weights`` is a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``): torchvision
    downloads the file unless it is in torch's hub cache; any failure (no network) becomes a
    one-line ``InputError``. ``weights_file`` is a local state_dict of the whole backbone."""
    torch.manual_seed(seed)
    try:
        model = build_backbone(backbone, weights=weights)
    except ValueError as e:
        raise InputError(str(e)) from None
    except Exception as e:  # URLError, HTTPError, corrupt download, hash mismatch
        url = resolve_weights(backbone, weights).url  # type: ignore[union-attr]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise InputError(
            f"cannot load the {weights} weights of {backbone} through torchvision "
            f"({one_line(e)[:200]}); without network, put {url} at {cached} "
            f"or use --weights-file"
        ) from None
    if weights_file is not None:
        weights_from_file(model, weights_file, backbone)
        used = f"file {weights_file}"
    elif weights is not None:
        used = f"torchvision {weights}"
    else:
        used = f"none (random init, seed {seed})"
    try:
        split = split_model(model.eval(), layer, name=backbone)
    except ValueError as e:
        raise InputError(str(e)) from None
    return split.front.eval(), used, split.stride
