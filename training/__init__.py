"""Lightning modules, losses and data modules (the synthetic scenes are the embedded default)."""

from training.codec_module import BaseCodecModule
from training.task import TaskModule, load_task_network

__all__ = ["BaseCodecModule", "TaskModule", "load_task_network"]
