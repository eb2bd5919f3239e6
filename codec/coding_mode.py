"""How a stream's latents are coded: the header's version and flags, as a mode the codecs take.

Format version 2 (:data:`EXACT`, the default) codes latents with device-exact entropy
parameters (:mod:`codec.exact`) and ends every rANS string in a check of what its decoder must
reproduce (:class:`codec.entropy.RansWriter`); header flag 0x01 (:data:`FLOAT`) marks version-2
streams coded with float parameters, for comparisons; version 1 (:data:`LEGACY`) is the float
path without a check, read for old streams. Imports no torch (``featcodec info`` uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

FLAG_FLOAT_ENTROPY = 0x01
"""Header flag (version 2): the latents were coded with float entropy parameters."""


@dataclass(frozen=True)
class CodingMode:
    """How a stream's latents are coded.

    Attributes:
        exact: the entropy parameters come from fixed-point copies of the networks
            (:mod:`codec.exact`): every device computes the same table indexes and means.
        checked: every rANS string ends in a check of what its decoder must reproduce (the
            table indexes, the symbols and ``Ŷ``): a decoder that diverges stops.
    """

    exact: bool
    checked: bool


EXACT = CodingMode(exact=True, checked=True)
"""Format version 2, the default: device-exact entropy parameters, checked strings."""
FLOAT = CodingMode(exact=False, checked=True)
"""Format version 2 with float entropy parameters (header flag; for comparisons): decodable
only where the float networks give the same bits, and refused elsewhere by the check."""
LEGACY = CodingMode(exact=False, checked=False)
"""Format version 1: float entropy parameters, no check (decoded on the device that wrote it)."""


def coding_mode(version: int, flags: int) -> CodingMode:
    """How the latents of a stream with this header were coded."""
    if version == 1:
        return LEGACY
    return FLOAT if flags & FLAG_FLOAT_ENTROPY else EXACT


def header_fields(mode: CodingMode) -> tuple[int, int]:
    """``(version, flags)`` of a stream whose latents are coded in ``mode``."""
    if mode == LEGACY:
        return 1, 0
    return 2, (0 if mode.exact else FLAG_FLOAT_ENTROPY)
