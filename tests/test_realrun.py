"""The sample of square sizes the slow real-network sweep compares (tests/realrun.py): a claim
that is wrong anywhere the sample is meant to cover is caught."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from realrun import square_sample, total_stride  # noqa: E402

from archlint.passes.progressions import expand_progressions, progressions  # noqa: E402


def _net(*strides):
    layers = [torch.nn.Conv2d(3, 3, 3, stride=s, padding=1) for s in strides]
    return torch.nn.Sequential(*layers, torch.nn.MaxPool2d(2))


def _table(mask, lo=1):
    return {"square": progressions(mask, lo), "undecided": {"square": []}}


def test_total_stride_is_the_product_of_the_strides():
    assert total_stride(_net(1, 2, 2)) == 8
    assert total_stride(torch.nn.Conv2d(3, 3, 3, stride=(1, 4))) == 4


@pytest.mark.parametrize("truth_period", [1, 2, 4, 8, 16])
def test_every_wrong_periodic_claim_is_sampled(truth_period):
    """Truth: multiples of a period from 8 on. Every claim that differs from it in a residue class
    above the exhaustive prefix (admitted or refused), or at its first size, differs at a
    sampled size."""
    model = _net(2, 2)  # total stride 8
    n = np.arange(1, 513)
    truth = (n % truth_period == 0) & (n >= 8)
    wrong_claims = [truth.copy() for _ in range(3)]
    wrong_claims[0][(n > 64) & (n % 8 == 5)] = True  # one residue class wrongly admitted above 64
    wrong_claims[1][(n > 64) & (n % truth_period == 0)] = False  # the tail wrongly refused
    wrong_claims[2][(n == 8) | (n == 7)] = ~truth[(n == 8) | (n == 7)]
    wrong_claims = [c for c in wrong_claims if (c != truth).any()]
    assert len(wrong_claims) >= 2
    for claim in wrong_claims:
        sample = square_sample(_table(claim), model, every_upto=64, top=160, edges_upto=256)
        differs = [int(k) for k in n[claim != truth]]
        assert set(sample) & set(differs), (truth_period, differs[:10])


def test_edges_of_a_bounded_run_and_their_neighbours():
    mask = np.zeros(300, dtype=bool)
    mask[199:240] = True  # 200..240 only
    table = _table(mask)
    sample = square_sample(table, _net(1), every_upto=64, top=160, edges_upto=256)
    assert {199, 200, 201, 239, 240, 241} <= set(sample)
    assert expand_progressions(table["square"], 1, 300).sum() == 41
