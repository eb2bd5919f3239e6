"""Lightning modules, losses and data modules (the synthetic scenes are the embedded default)."""

from featcodec.training.checkpointing import LastCheckpoint
from featcodec.training.codec_module import BaseCodecModule
from featcodec.training.enhancement_module import EnhancementModule
from featcodec.training.pframe_module import PFrameModule
from featcodec.training.stitch_module import StitchModule, load_stitch
from featcodec.training.task import TaskModule, load_task_network

__all__ = [
    "BaseCodecModule",
    "EnhancementModule",
    "LastCheckpoint",
    "PFrameModule",
    "StitchModule",
    "TaskModule",
    "load_stitch",
    "load_task_network",
]
