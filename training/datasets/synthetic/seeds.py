"""The seeded random streams of the synthetic scenes.

Everything is derived from ``numpy.random.Generator(PCG64(SeedSequence([seed, tag, ...])))``;
the tags keep the streams for different purposes apart (a scene's layout, its clip's motion,
the items of a dataset split), so the same ``(seed, size)`` always gives the same scene.
"""

from __future__ import annotations

import zlib

import numpy as np

# Seed-sequence tags keep the random streams for different purposes apart.
TAG_LAYOUT = 0x5CE7E
TAG_MOTION = 0x3071
TAG_SCENES = 0xDA7A
TAG_CLIPS = 0xC11B
TAG_TILT = 0x7117


def rng(*entropy: int) -> np.random.Generator:
    """The generator of the stream ``entropy`` (e.g. ``seed, TAG_LAYOUT, attempt``)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def lerp(u: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """Uniform draws ``u`` in [0, 1) mapped onto ``[lo, hi)``."""
    return lo + (hi - lo) * u


def item_seed(seed: int, split: str, index: int, tag: int = TAG_SCENES) -> int:
    """Scene seed of item ``index`` of ``split``: a 64-bit hash of ``(seed, split, index)``."""
    code = zlib.crc32(split.encode("utf-8"))
    state = np.random.SeedSequence([seed, tag, code, index]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])
