from __future__ import annotations

import math

import pytest
import torch

from featcodec.codec.entropy import FactorizedCoder, GaussianCoder, RansReader, RansWriter, bits
from featcodec.eval.bench import gaussian_latent, ideal_bits


@pytest.fixture(scope="module")
def coder() -> GaussianCoder:
    return GaussianCoder().eval()


def test_gaussian_round_trip_is_exact_and_close_to_ideal(coder: GaussianCoder) -> None:
    y, scales, means = gaussian_latent((32, 24, 24), seed=1)
    strings = coder.encode(y, scales, means)
    decoded = coder.decode(strings, scales, means)
    assert torch.equal(decoded, torch.round(y - means) + means)
    ideal = ideal_bits(y, scales, means)
    overhead = 8 * len(strings[0]) / ideal - 1
    assert 0 <= overhead < 0.003


def test_gaussian_batch_gives_one_string_per_element(coder: GaussianCoder) -> None:
    y, scales, means = gaussian_latent((3, 5, 7), seed=2)
    batch = [t.repeat(2, 1, 1, 1) for t in (y, scales, means)]
    batch[0][1] += 3  # the second element differs
    strings = coder.encode(*batch)
    assert len(strings) == 2 and strings[0] != strings[1]
    assert torch.equal(
        coder.decode(strings, batch[1], batch[2]), torch.round(batch[0] - batch[2]) + batch[2]
    )


def test_index_is_the_table_scale_nearest_in_log_scale(coder: GaussianCoder) -> None:
    scales = torch.exp(torch.linspace(math.log(0.05), math.log(400), 5000))
    idx = coder.build_indexes(scales).long()
    log_table = torch.log(coder.scale_table.double())
    distance = (torch.log(scales.double().clamp_min(coder.scale_min))[:, None] - log_table).abs()
    best = distance.min(dim=1).values
    chosen = distance.gather(1, idx[:, None])[:, 0]
    assert torch.all(chosen <= best + 1e-5)
    assert idx.min() == 0 and idx.max() == len(log_table) - 1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_tiny_symbol_counts_and_outliers_round_trip(coder: GaussianCoder, n: int) -> None:
    # compressai's rANS buffer is sized by symbol count; a handful of costly symbols must work
    y = torch.linspace(-300, 300, n).reshape(1, n, 1, 1)
    scales = torch.full_like(y, 0.11)
    means = torch.zeros_like(y)
    strings = coder.encode(y, scales, means)
    assert torch.equal(coder.decode(strings, scales, means), torch.round(y))


def test_denser_table_beats_compressai_default_overhead(coder: GaussianCoder) -> None:
    from compressai.entropy_models import GaussianConditional
    from compressai.models.google import get_scale_table

    y, scales, means = gaussian_latent((64, 32, 32), seed=3)
    ideal = ideal_bits(y, scales, means)
    peer = GaussianConditional(None)
    peer.update_scale_table(get_scale_table())
    ours = len(coder.encode(y, scales, means)[0])
    theirs = len(peer.compress(y, peer.build_indexes(scales), means)[0])
    assert ours < theirs
    assert 8 * ours / ideal - 1 < 0.5 * (8 * theirs / ideal - 1)


def test_coding_tables_are_not_in_the_state_dict(coder: GaussianCoder) -> None:
    assert not any("cdf" in k or "offset" in k or "scale_table" in k for k in coder.state_dict())
    eb = FactorizedCoder(4)
    assert set(eb.state_dict()) & {"_quantized_cdf", "_offset", "_cdf_length"} == set()


def test_factorized_tables_follow_the_parameters() -> None:
    torch.manual_seed(0)
    eb = FactorizedCoder(4).eval()
    z = torch.randn(1, 4, 3, 3) * 4
    # never updated by hand: coding builds the tables itself
    first = eb.encode(z)
    assert torch.equal(eb.decode(first, (3, 3)), eb(z)[0])
    with torch.no_grad():
        eb.quantiles[:, :, 1] += 0.3  # move the medians: the old tables would be wrong
        for m in eb.matrices:
            m.mul_(1.5)
    second = eb.encode(z)
    assert torch.equal(eb.decode(second, (3, 3)), eb(z)[0])
    assert first != second


@pytest.mark.slow
def test_factorized_estimate_matches_real_bits_after_training() -> None:
    torch.manual_seed(0)
    eb = FactorizedCoder(8)
    data = torch.randn(8, 8, 32, 32) * torch.linspace(0.5, 6, 8).reshape(1, 8, 1, 1)
    opt = torch.optim.Adam([p for n, p in eb.named_parameters() if n != "quantiles"], lr=1e-2)
    aux = torch.optim.Adam([eb.quantiles], lr=1e-1)
    for _ in range(300):
        _, lik = eb(data)
        loss = bits(lik) / data.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux.zero_grad()
        eb.loss().backward()
        aux.step()
    eb.eval()
    _, lik = eb(data)
    estimate = float(bits(lik))
    real = 8 * sum(len(s) for s in eb.encode(data))
    assert abs(real / estimate - 1) < 0.02


@pytest.mark.parametrize("n", [1, 3, 8, 300])
def test_one_string_holds_the_hyper_latent_and_the_latent(coder: GaussianCoder, n: int) -> None:
    """A P-frame's Ẑ and Ŷ share one rANS string: read back in order, exactly, and one flush
    (8 bytes) shorter than two strings; a handful of symbols (tiny frames) works too."""
    torch.manual_seed(n)
    factorized = FactorizedCoder(4).eval()
    z = torch.randn(1, 4, 1, n) * 3
    y, scales, means = (t[None] for t in gaussian_latent((2, 1, n), seed=n))
    y[0, 0, 0, 0] = 300.0  # an outlier, coded by the escape mechanism
    writer = RansWriter()
    z_hat = factorized.write(writer, z)
    y_hat = coder.write(writer, y, scales, means)
    string = writer.flush()
    reader = RansReader(string)
    assert torch.equal(factorized.read(reader, (1, n)), z_hat)
    assert torch.equal(coder.read(reader, scales, means), y_hat)
    assert torch.equal(y_hat, torch.round(y - means) + means)
    separate = len(factorized.encode(z)[0]) + len(coder.encode(y, scales, means)[0])
    assert len(string) <= separate - 4


def test_an_empty_writer_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing was written"):
        RansWriter().flush()
