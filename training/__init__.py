"""Lightning modules, losses and data modules (the synthetic scenes are the embedded default)."""

from training.codec_module import BaseCodecModule
from training.enhancement_module import EnhancementModule
from training.pframe_module import PFrameModule
from training.task import TaskModule, load_task_network

__all__ = [
    "BaseCodecModule",
    "EnhancementModule",
    "PFrameModule",
    "TaskModule",
    "load_task_network",
]
