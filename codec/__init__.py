"""Everything that crosses the wire: entropy coding, the base layer, the bitstream container and
the ``Codec`` facade."""

from featcodec.codec.errors import BitstreamError, CheckpointError, FeatcodecError, InputError

__all__ = ["BitstreamError", "CheckpointError", "FeatcodecError", "InputError"]
