"""One rate–distortion point of a codec, measured through real ``.fcb`` bitstreams.

Every image is encoded to a stream, the stream is written to disk (when a folder is given),
read back, decoded, and the task runs on the decoded features. The rate is the size of the
files; the likelihood estimate is reported beside it, labelled as an estimate.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from codec import bitstream
from codec.entropy import bits
from codec.facade import Codec
from codec.files import atomic_write


@dataclass
class RDPoint:
    """Averages over a dataset split.

    Attributes:
        images: number of images coded.
        bpp: bits per input pixel of the whole ``.fcb`` files (header included).
        bpp_payload: bits per input pixel of the entropy-coded sections alone.
        bpp_estimated: −Σlog₂p of the latents per input pixel (likelihood estimate).
        bits_per_element: file bits per feature-tensor element.
        accuracy: task accuracy on the decoded features.
        accuracy_uncompressed: task accuracy of the uncompressed network.
        encode_ms, decode_ms: mean wall time per image (front + encode; decode + back).
    """

    images: int
    bpp: float
    bpp_payload: float
    bpp_estimated: float
    bits_per_element: float
    accuracy: float
    accuracy_uncompressed: float
    encode_ms: float
    decode_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def measure(
    codec: Codec,
    samples: Iterable[tuple[str, Tensor, int]],
    stream_dir: str | os.PathLike[str] | None = None,
    progress: str | None = None,
    batch_size: int = 64,
) -> RDPoint:
    """Code every ``(name, image (3, H, W), label)`` of ``samples`` and measure the point.

    With ``stream_dir`` each stream is written to ``<stream_dir>/<name>.fcb`` and decoded
    from the file; otherwise it is decoded from memory. The likelihood estimate and the
    uncompressed accuracy come from a batched forward pass over the same images.
    """
    codec.eval()
    out_dir = Path(stream_dir) if stream_dir is not None else None
    file_bytes = payload_bytes = pixels = elements = 0
    correct = 0
    t_enc = t_dec = 0.0
    images: list[Tensor] = []
    labels: list[int] = []
    for name, image, label in tqdm(samples, desc=progress, disable=progress is None, leave=False):
        t0 = time.perf_counter()
        data = codec.encode(image)
        t_enc += time.perf_counter() - t0
        if out_dir is not None:
            path = out_dir / f"{name}.fcb"
            atomic_write(path, data)
            data = path.read_bytes()
        t0 = time.perf_counter()
        decoded = codec.decode(data)
        t_dec += time.perf_counter() - t0

        stream = decoded.stream
        file_bytes += len(data)
        payload_bytes += sum(len(s.payload) for s in stream.sections)
        pixels += math.prod(image.shape[-2:])
        elements += math.prod(stream.shape(bitstream.ShapeTag.FEATURES))
        correct += int(decoded.output.argmax(1).item() == label)
        images.append(image)
        labels.append(label)
    if not images:
        raise ValueError("no samples to measure")

    estimated_bits = 0.0
    correct_ref = 0
    for i in range(0, len(images), batch_size):
        x = torch.stack(images[i : i + batch_size]).to(codec._device)
        f = codec.features(x)
        estimated_bits += float(sum(bits(v) for v in codec.base(f).likelihoods.values()))
        target = torch.tensor(labels[i : i + batch_size], device=x.device)
        correct_ref += int((codec.back(f).argmax(1) == target).sum())
    n = len(images)
    return RDPoint(
        images=n,
        bpp=8 * file_bytes / pixels,
        bpp_payload=8 * payload_bytes / pixels,
        bpp_estimated=estimated_bits / pixels,
        bits_per_element=8 * file_bytes / elements,
        accuracy=correct / n,
        accuracy_uncompressed=correct_ref / n,
        encode_ms=1e3 * t_enc / n,
        decode_ms=1e3 * t_dec / n,
    )
