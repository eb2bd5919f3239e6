"""Networks of featcodec: classification backbones and how they are split (front / back), and
the transform building blocks of the codecs (``models.blocks``)."""

from featcodec.models.backbones import *  # noqa: F403  (the public names are backbones.__all__)
from featcodec.models.backbones import __all__  # noqa: F401
