"""Model fingerprints: which model wrote a stream.

A fingerprint is ``FINGERPRINT_BYTES`` of blake2b over the architecture (sorted JSON) and every
weight, in name order; it is written into every stream's header, and a decoder refuses a
stream whose fingerprint is not its own. The weights are hashed under their *canonical*
names: the names of checkpoint format 1, from before the transforms used compressai's layers
(:func:`legacy_names`), so that the fingerprints of every model ever trained, and the streams
they wrote, stay valid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from featcodec.codec.bitstream import FINGERPRINT_BYTES

Stamp = tuple[tuple[int, int], ...]
"""What :func:`version_stamp` returns."""


def version_stamp(tensors: Iterable[Tensor]) -> Stamp:
    """Identity and version counter of each tensor: changes when one is replaced or modified
    in place (an optimizer step, a state-dict load), so a digest or a copy derived from the
    tensors is recomputed only then."""
    return tuple((id(t), t._version) for t in tensors)


def weights_digest(meta: dict[str, Any] | None, tensors: dict[str, Tensor]) -> bytes:
    """``FINGERPRINT_BYTES`` of blake2b over ``meta`` (as sorted JSON; skipped when None) and
    the named tensors in name order: the model fingerprints, and any weights' identity."""
    h = hashlib.blake2b(digest_size=FINGERPRINT_BYTES)
    if meta is not None:
        h.update(json.dumps(meta, sort_keys=True).encode())
    for name, value in sorted(tensors.items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


_BOTTLENECK = (("conv1", "body.0"), ("conv2", "body.2"), ("conv3", "body.4"))


def legacy_names(model: nn.Module) -> dict[str, str]:
    """State-dict key of ``model`` → its name in checkpoint format 1, for the keys that
    changed when the transforms moved to compressai's layers: a residual bottleneck block's
    ``conv1/2/3`` were ``body.0/2/4``; an attention block's ``conv_a``/``conv_b`` units were
    ``trunk``/``mask`` units (``conv_a.1.conv.2`` was ``trunk.1.block.body.2``). Keys not in
    the map kept their names. Shared modules are listed under every path."""
    from compressai.layers import AttentionBlock
    from compressai.models.sensetime import ResidualBottleneckBlock

    out: dict[str, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        p = f"{path}." if path else ""
        pairs: list[tuple[str, str]] = []
        if isinstance(module, ResidualBottleneckBlock):
            pairs = list(_BOTTLENECK)
        elif isinstance(module, AttentionBlock):
            for new, old in (("conv_a", "trunk"), ("conv_b", "mask")):
                for i in range(3):
                    for j in (0, 2, 4):
                        pairs.append((f"{new}.{i}.conv.{j}", f"{old}.{i}.block.body.{j}"))
            pairs.append(("conv_b.3", "mask.3"))
        for new, old in pairs:
            for kind in ("weight", "bias"):
                out[f"{p}{new}.{kind}"] = f"{p}{old}.{kind}"
    return out


def canonical_state(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` (``model``'s state dict or part of it) under their canonical names."""
    names = legacy_names(model)
    return {names.get(k, k): v for k, v in tensors.items()}
