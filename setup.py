"""Build of the one compiled module, the bounds-checked rANS decoder (codec/_rans.c); the
rest of the configuration is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("featcodec.codec._rans", ["codec/_rans.c"], extra_compile_args=["-O2"])]
)
