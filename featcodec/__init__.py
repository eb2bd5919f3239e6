"""featcodec: a learned, scalable codec for the feature tensors of split neural networks.

The packages: ``models`` (split backbones, building blocks), ``codec`` (entropy coding, base
layer, bitstream, the ``Codec`` facade), ``training`` (Lightning modules, data), ``eval``
(measurement, demo, benchmarks). This package holds the ``featcodec`` console command.
"""

__version__ = "0.1.0"
