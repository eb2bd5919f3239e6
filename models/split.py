"""Splitting a network into an edge-side ``front`` and a server-side ``back``.

A backbone (:mod:`models.backbones`) or a task network (:mod:`models.tasks`) is traced with
:mod:`torchvision.models.feature_extraction` and cut at a named graph node: ``front(x)`` maps
images ``(B, 3, H, W)`` to the feature tensor ``(B, C, H', W')`` the codec compresses,
``back(features)`` maps it to the model's output, and ``back(front(x))`` equals ``model(x)``.
A split point must be a *cut*: nothing after it may read a tensor computed before it.
``front`` and ``back`` share their layers with the model and keep its ``state_dict`` keys.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from featcodec.models.backbones import (
    DEFAULT_SPLITS,
    INPUT_SPLIT,
    build_backbone,
    check_backbone_name,
)

__all__ = ["Split", "split_backbone", "split_model", "split_nodes"]

_PROBE_SIZE = 224  # side of the dummy image used to measure a split's stride and channels


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A backbone split into an edge-side ``front`` and a server-side ``back``.

    Attributes:
        front: images ``(B, 3, H, W)`` -> features ``(B, channels, H', W')``.
        back: features ``(B, channels, H', W')`` -> model output (logits ``(B, K)``).
        stride: input pixels per feature pixel (``H' = ceil(H / stride)`` for the usual
            padded stride-2 layers).
        channels: number of feature channels ``C``.
        node: the split point as given (a node name or a module prefix).
        backbone: backbone name (``""`` if the model was split without one).
    """

    front: nn.Module
    back: nn.Module
    stride: int
    channels: int
    node: str
    backbone: str

    def feature_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Feature shape ``(C, H', W')`` for an input image of ``height x width`` pixels."""
        return (self.channels, math.ceil(height / self.stride), math.ceil(width / self.stride))


@dataclass
class _Trace:
    """The eval-mode graph of a model, with every node named as torchvision names it."""

    module: fx.GraphModule  # returns a dict {qualname: node} of every node
    names: list[str]  # eval-mode node names in execution order
    nodes: dict[str, fx.Node]  # qualname -> node of ``module.graph``
    qualnames: dict[fx.Node, str]  # node -> qualname


def _tracer_kwargs(model: nn.Module) -> dict[str, Any]:
    """Modules whose class sets ``fx_leaf = True`` (a sparse block, whose shapes depend on its
    data) are traced as one node each (``"layer2.0"``) and run as modules."""
    leaves = {type(m) for m in model.modules() if getattr(type(m), "fx_leaf", False)}
    return {"leaf_modules": sorted(leaves, key=lambda c: c.__qualname__)}


def _trace(model: nn.Module) -> _Trace:
    """Trace ``model`` in eval mode, keeping every node (none is returned, so none is dead)."""
    kwargs = _tracer_kwargs(model)
    train_names, names = get_graph_node_names(
        model, tracer_kwargs=kwargs, suppress_diff_warning=True
    )
    extractor = create_feature_extractor(
        model,
        train_return_nodes={train_names[-1]: "output"},  # the train graph is not used
        eval_return_nodes={n: n for n in names},
        tracer_kwargs=kwargs,
        suppress_diff_warning=True,
    )
    graph = extractor.eval_graph
    output = next(n for n in graph.nodes if n.op == "output")
    nodes: dict[str, fx.Node] = dict(output.args[0])  # type: ignore[arg-type]
    module = fx.GraphModule(extractor, graph, type(model).__name__)
    return _Trace(module, names, nodes, {node: qn for qn, node in nodes.items()})


def _live_input_nodes(graph: fx.Graph, final: fx.Node) -> tuple[list[fx.Node], set[fx.Node]]:
    """Nodes in execution order, and the set of those that depend on the graph input and that
    ``final`` (the model output) depends on."""
    order = list(graph.nodes)
    needed: set[fx.Node] = set()
    stack = [final]
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    from_input: set[fx.Node] = set()
    for node in order:
        if node.op == "placeholder" or any(a in from_input for a in node.all_input_nodes):
            from_input.add(node)
    return order, needed & from_input


def _crossing(trace: _Trace, node: fx.Node) -> list[str]:
    """Names of the input-dependent nodes before ``node`` that a node after it still reads."""
    final = trace.nodes[trace.names[-1]]
    order, live = _live_input_nodes(trace.module.graph, final)
    pos = {n: i for i, n in enumerate(order)}
    cut = pos[node]
    return [
        trace.qualnames.get(n, n.name)
        for n in order[:cut]
        if n in live and any(u in live and pos[u] > cut for u in n.users)
    ]


def _cuts(trace: _Trace) -> list[str]:
    """Names of all nodes that are cuts of the traced model, in execution order."""
    final = trace.nodes[trace.names[-1]]
    order, live = _live_input_nodes(trace.module.graph, final)
    pos = {n: i for i, n in enumerate(order)}
    cuts: list[str] = []
    reach = -1  # the furthest position read by a live node seen so far
    for i, node in enumerate(order):
        if node in live and reach <= i and node in trace.qualnames:
            cuts.append(trace.qualnames[node])
        if node in live:
            reach = max([reach, *(pos[u] for u in node.users if u in live)])
    return cuts


def _resolve_node(trace: _Trace, split_at: str, label: str) -> str:
    """The node name that ``split_at`` (a node name or module prefix) stands for."""
    if split_at in trace.nodes:
        return split_at
    inside = [n for n in trace.names if n.startswith(split_at + ".")]
    if inside:
        return inside[-1]
    prefixes = {".".join(n.split(".")[:k]) for n in trace.names for k in range(1, n.count(".") + 1)}
    close = difflib.get_close_matches(split_at, sorted(prefixes | set(trace.names)), n=5)
    hint = f"close: {', '.join(close)}" if close else f"e.g. {', '.join(trace.names[1:6])}"
    raise ValueError(
        f"unknown split point {split_at!r} for {label}; {hint} (all: split_nodes({label!r}))"
    )


def _copy_buffer_persistence(graph_module: nn.Module, model: nn.Module) -> None:
    """Keep non-persistent model buffers non-persistent in ``graph_module``.

    fx copies a buffer read by a ``get_attr`` node into a fresh container module as a
    persistent buffer, which would add keys (``Normalize.mean``) to the ``state_dict``.
    """
    for module_name, module in model.named_modules():
        for buffer in getattr(module, "_non_persistent_buffers_set", ()):
            path = f"{module_name}.{buffer}" if module_name else buffer
            owner_name, _, field = path.rpartition(".")
            try:
                owner = graph_module.get_submodule(owner_name)
            except AttributeError:
                continue
            if field in owner._buffers:
                owner._non_persistent_buffers_set.add(field)


def _make_front(model: nn.Module, node: str) -> fx.GraphModule:
    """torchvision's feature extractor for ``node``, returning the tensor instead of a dict."""
    front = create_feature_extractor(
        model, return_nodes={node: "features"}, tracer_kwargs=_tracer_kwargs(model)
    )
    for graph in (front.train_graph, front.eval_graph):
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = (output.args[0]["features"],)
        graph.lint()
    front.recompile()
    _copy_buffer_persistence(front, model)
    return front


def _make_back(trace: _Trace, node: str, model: nn.Module, label: str) -> fx.GraphModule:
    """The traced graph from ``node`` (now the input) to the model output."""
    graph = trace.module.graph
    split, final = trace.nodes[node], trace.nodes[trace.names[-1]]
    old_inputs: list[fx.Node] = []
    if split.op != "placeholder":  # at the input placeholder, the back is the whole model
        crossing = _crossing(trace, split)
        if crossing:
            shown = ", ".join(repr(n) for n in crossing[:3])
            more = f" and {len(crossing) - 3} more" if len(crossing) > 3 else ""
            cuts, names = _cuts(trace), trace.names
            before = [c for c in cuts if names.index(c) < names.index(node)][-1:]
            after = [c for c in cuts if names.index(c) > names.index(node)][:1]
            near = ", ".join(repr(c) for c in before + after)
            raise ValueError(
                f"split point {node!r} is not a cut of {label}: the rest of the network "
                f"still needs {shown}{more} (a connection skips over it); nearest cuts: {near}"
            )
        old_inputs = [n for n in graph.nodes if n.op == "placeholder"]
        with graph.inserting_before(old_inputs[0]):
            features = graph.placeholder("features")
        split.replace_all_uses_with(features)
        final = features if final is split else final
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (final,)
    graph.eliminate_dead_code()
    for old in old_inputs:
        if old.users:  # unreachable after the cut check; kept as a safety net
            raise ValueError(f"split point {node!r} is not a cut of {label}")
        graph.erase_node(old)
    graph.lint()
    back = fx.GraphModule(trace.module, graph, type(model).__name__)
    back.delete_all_unused_submodules()
    back.recompile()
    _copy_buffer_persistence(back, model)
    return back


def _measure(front: nn.Module, model: nn.Module, label: str, node: str) -> tuple[int, int]:
    """Run ``front`` on a dummy image in eval mode; returns ``(stride, channels)``."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    dummy = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=device, dtype=dtype)
    front.eval()
    with torch.no_grad():
        feats = front(dummy)
    if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(
            f"split point {node!r} of {label} gives {shape}, not a (B, C, H, W) feature map"
        )
    return round(_PROBE_SIZE / feats.shape[-2]), int(feats.shape[1])


def split_model(model: nn.Module, split_at: str, name: str = "") -> Split:
    """Split ``model`` at node ``split_at`` into ``front`` and ``back``.

    Args:
        model: a classification model, images ``(B, 3, H, W)`` -> logits ``(B, K)``, traceable
            by torch.fx.
        split_at: an eval-mode node name from :func:`split_nodes` (``"layer2.0.add"``), a module
            prefix (``"layer2"``: the last node of that module), or ``"input"`` (identity front,
            the whole model as back).
        name: backbone name, for messages and :attr:`Split.backbone`.

    Returns:
        The :class:`Split`. ``front``/``back`` share their layers with ``model``; their training
        mode is the model's. Every module of ``model`` keeps its training mode.

    Raises:
        ValueError: unknown node, a node that is not a cut (a connection skips over it), or a
            node whose output is not a ``(B, C, H, W)`` feature map.
    """
    label = name or type(model).__name__
    if split_at == INPUT_SPLIT:
        return Split(nn.Identity(), model, stride=1, channels=3, node=split_at, backbone=name)
    modes = [(m, m.training) for m in model.modules()]
    try:
        trace = _trace(model)
        node = _resolve_node(trace, split_at, label)
        back = _make_back(trace, node, model, label)
        front = _make_front(model, node)
        stride, channels = _measure(front, model, label, split_at)
        front.train(model.training)
        back.train(model.training)
    finally:
        for module, mode in modes:
            module.training = mode
    return Split(front, back, stride=stride, channels=channels, node=split_at, backbone=name)


def split_backbone(
    name: str,
    split_at: str | None = None,
    weights: str | None = None,
    num_classes: int | None = None,
) -> Split:
    """Build backbone ``name`` (see :func:`build_backbone`) and split it (see
    :func:`split_model`).

    Args:
        name: backbone name.
        split_at: split point; ``None`` = ``DEFAULT_SPLITS[name]``.
        weights: ``None``, ``"DEFAULT"`` or a weights enum member name.
        num_classes: classifier size; ``None`` = the model's default.
    """
    key = check_backbone_name(name)
    if split_at is None:
        if key not in DEFAULT_SPLITS:
            raise ValueError(f"no default split point for {name!r}; pass split_at")
        split_at = DEFAULT_SPLITS[key]
    model = build_backbone(key, weights=weights, num_classes=num_classes)
    return split_model(model, split_at, name=key)


def split_nodes(name_or_model: str | nn.Module, cuts_only: bool = False) -> list[str]:
    """Eval-mode node names of a backbone, in execution order, for choosing a split point.

    Args:
        name_or_model: a backbone name (built with random weights) or a model.
        cuts_only: list only the nodes :func:`split_model` accepts (those no connection skips
            over), e.g. ``"layer1.1.relu_1"`` but not ``"layer2.0.conv1"`` in a ResNet.

    Returns:
        Node names, the input placeholder (``"x"``) first.
    """
    if isinstance(name_or_model, str):
        model = build_backbone(name_or_model)
    else:
        model = name_or_model
    modes = [(m, m.training) for m in model.modules()]
    try:
        if not cuts_only:
            kwargs = _tracer_kwargs(model)
            return get_graph_node_names(model, tracer_kwargs=kwargs, suppress_diff_warning=True)[1]
        return _cuts(_trace(model))
    finally:
        for module, mode in modes:
            module.training = mode
