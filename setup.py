"""Build of the one compiled module, the bounds-checked rANS decoder (codec/bounded_rans.c); the
rest of the configuration is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("featcodec.codec.bounded_rans", ["codec/bounded_rans.c"], extra_compile_args=["-O2"])]
)
