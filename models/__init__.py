"""Networks of featcodec: classification backbones and how they are split (front / back), and
the tasks a split network serves (``models.tasks``). The codecs' transform layers are
compressai's (``compressai.layers``, ``compressai.models.utils``)."""

from featcodec.models.backbones import *  # noqa: F403  (the public names are backbones.__all__)
from featcodec.models.backbones import __all__  # noqa: F401
