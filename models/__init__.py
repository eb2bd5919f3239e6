"""Networks of featcodec: classification backbones (``models.backbones``), how a network is cut
into front and back (``models.split``), and the tasks a split network serves
(``models.tasks``). The codecs' transform layers are compressai's (``compressai.layers``,
``compressai.models.utils``)."""

from featcodec.models.backbones import *  # noqa: F403  (the public names are backbones.__all__)
from featcodec.models.backbones import __all__ as _backbone_names
from featcodec.models.split import *  # noqa: F403
from featcodec.models.split import __all__ as _split_names

__all__ = [*_backbone_names, *_split_names]
