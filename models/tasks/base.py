"""A task as one object: everything the codecs, training and evaluation need to know about
what a split network computes.

A :class:`Task` builds its network on a backbone and splits it, runs it the way its loss
wants, computes its loss against a :class:`~models.tasks.batch.Batch` and its distillation
loss against the uncompressed network's output (the teacher), makes its metric (a
``torchmetrics`` metric, right under DDP), and summarises one prediction for
``predictions.json``. Each task lives in one file of this package and registers itself
(:func:`register_task`); nothing outside those files compares task names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn
from torchmetrics import Metric

from featcodec.models.sparse import sparsify
from featcodec.models.split import Split, split_model


class Task:
    """Base class of the tasks (one instance each, in the registry).

    Class attributes:
        name: the registry key, stored in architectures as ``arch["task"]``.
        metric_name: the name of its metric in results files and logs.
        higher_is_better: the metric's direction (BD-rates and plots need it).
        targets: the :class:`~models.tasks.batch.Batch` keys its loss and metric read.
        classes_in_data: the data's labels must lie in ``0 .. num_classes − 1``.
        dense: its output is a map of the input's size (``decode`` writes it as a tensor;
            an enhancement layer can be trained for it).
        distillable: it has a distillation loss (to the uncompressed output).
    """

    name: ClassVar[str]
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    targets: ClassVar[tuple[str, ...]] = ()
    classes_in_data: ClassVar[bool] = False
    dense: ClassVar[bool] = False
    distillable: ClassVar[bool] = True
    map_suffix: ClassVar[str] = ".pt"
    """The file a dense output is saved to: a tensor, or a PNG for a class map."""

    def configure(self, options: Mapping[str, Any]) -> Task:
        """This task with the loss and metric options among ``options`` (an architecture's
        ``task_options``; the network's own go to :meth:`build`): itself, for a task whose
        loss has none."""
        return self

    # the network ---------------------------------------------------------------------------

    def build(
        self, backbone: str, weights: str | None, num_classes: int, **options: Any
    ) -> nn.Module:
        """The task network on ``backbone`` (``weights``: the backbone's pretrained weights,
        ``None``: random), in train mode, mapping normalized images ``(B, 3, H, W)`` to the
        task output; ``options`` are the task's own (``arch["task_options"]``)."""
        raise NotImplementedError

    def network(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        options: Mapping[str, Any] | None = None,
        sparse: str | None = None,
    ) -> nn.Module:
        """:meth:`build`, with the residual blocks of stages ``layer1`` … ``sparse`` made
        spatially sparse (:func:`models.sparse.sparsify`) when ``sparse`` names a stage."""
        net = self.build(backbone, weights, num_classes, **dict(options or {}))
        return sparsify(net, sparse) if sparse else net

    def split(self, model: nn.Module, split_at: str, name: str = "") -> Split:
        """``model`` cut into ``front`` and ``back`` at node ``split_at`` (``back(front(x))``
        equals ``model(x)``)."""
        return split_model(model, split_at, name=name)

    def forward(self, model: nn.Module, inputs: Tensor, batch: Mapping[str, Any]) -> Any:
        """Run ``model`` (or a split ``back`` on features) as the loss expects, in whatever
        mode it is in."""
        return model(inputs)

    def loss_pass(self, model: nn.Module, inputs: Tensor, batch: Mapping[str, Any]) -> Any:
        """What :meth:`loss` consumes from a *frozen* (eval-mode) ``model``: its output, unless
        the network only gives its loss in training mode (then it runs so, statistics frozen)."""
        return self.forward(model, inputs, batch)

    def prediction(self, model: nn.Module, inputs: Tensor, loss_output: Any) -> Any:
        """The prediction of the frozen ``model`` on ``inputs``, given what :meth:`loss_pass`
        returned for them (the same thing unless that was a loss)."""
        return loss_output

    # losses --------------------------------------------------------------------------------

    def loss(self, output: Any, batch: Mapping[str, Any]) -> Tensor:
        """Training loss of ``output`` against the batch's ground truth."""
        raise NotImplementedError

    def distill(self, output: Any, teacher: Any) -> Tensor:
        """How far ``output`` (on decoded features) is from the uncompressed ``teacher``."""
        raise ValueError(f"the {self.name} task has no distillation loss; use distortion 'task'")

    # evaluation ----------------------------------------------------------------------------

    def metric(self, num_classes: int) -> Metric:
        """A fresh metric (``update(output, batch)``, ``compute()`` a 0-d tensor, NaN when it
        saw nothing to measure)."""
        raise NotImplementedError

    def summary(self, output: Any) -> dict[str, Any]:
        """What ``predictions.json`` records of one output (a batch of one)."""
        raise NotImplementedError

    def output_channels(self, num_classes: int) -> int:
        """Channels of the task's dense output (an enhancement layer trained for it)."""
        raise ValueError(f"an enhancement layer cannot target the {self.name} task")

    def output_map(self, output: Tensor) -> Tensor:
        """A dense output ``(C, H, W)`` as it is saved: as is (a class map for segmentation)."""
        return output

    def __repr__(self) -> str:
        return f"<task {self.name}>"


TASKS: dict[str, Task] = {}
"""Task name → its :class:`Task`."""

DEFAULT_TASK = "classification"
"""The task of an architecture that names none (every checkpoint written before the other
tasks existed); architectures of it leave ``task`` out, so their fingerprints never changed."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is already registered")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    """The registered task ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def list_tasks() -> list[str]:
    return sorted(TASKS)


def task_of(arch: Mapping[str, Any]) -> Task:
    """The task an architecture serves (classification when it names none: every checkpoint
    written before the other tasks existed), configured with its ``task_options``."""
    options = arch.get("task_options") or {}
    return get_task(str(arch.get("task", DEFAULT_TASK))).configure(options)


def metric_higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better: a task's metric by its declared direction, an
    error (``mse``, ``rmse``) lower, anything else (PSNR, ...) higher."""
    for task in TASKS.values():
        if task.metric_name == metric:
            return task.higher_is_better
    return metric not in ("mse", "rmse")
