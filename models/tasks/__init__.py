"""Tasks as objects: one file per task, one registry.

A task (:class:`~models.tasks.base.Task`) builds its head on a split backbone, computes its
loss and distillation loss, makes its metric and summarises a prediction; everything else in
featcodec asks the task, never compares its name. Registered: classification
(:mod:`.classification`), segmentation (:mod:`.segmentation`), depth (:mod:`.depth`),
keypoints (:mod:`.keypoints`), detection (:mod:`.detection`), 3-D keypoints (:mod:`.pose3d`,
HEMlets: :mod:`.hemlets`). The keys a batch carries are a
typed contract, :class:`~models.tasks.batch.Batch`.

Adding a task: a new file with a :class:`Task` subclass decorated with :func:`register_task`,
imported below.
"""

from featcodec.models.tasks import (
    classification,
    depth,
    detection,
    keypoints,
    pose3d,
    segmentation,
)
from featcodec.models.tasks.base import (
    DEFAULT_TASK,
    TASKS,
    Task,
    get_task,
    list_tasks,
    metric_higher_is_better,
    register_task,
    task_of,
)
from featcodec.models.tasks.batch import BATCH_KEYS, Batch

del classification, depth, detection, keypoints, pose3d, segmentation  # registered on import

__all__ = [
    "BATCH_KEYS",
    "DEFAULT_TASK",
    "TASKS",
    "Batch",
    "Task",
    "get_task",
    "list_tasks",
    "metric_higher_is_better",
    "register_task",
    "task_of",
]
