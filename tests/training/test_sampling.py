"""The length-grouped training sampler: every row once an epoch, less padding, reproducible."""

from __future__ import annotations

import random

from torch.utils.data import DistributedSampler

from training.sampling import MIN_BATCHES, LengthGroupedSampler


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 384) for _ in range(n)]


def _padded(order: list[int], lengths: list[int], batch: int) -> int:
    """Tokens a pass costs when each batch pads to its longest row."""
    return sum(
        max(lengths[i] for i in order[b : b + batch]) * len(order[b : b + batch])
        for b in range(0, len(order), batch)
    )


def test_every_row_once_an_epoch_with_far_less_padding_than_shuffled_batches():
    lengths = _lengths(2000)
    sampler = LengthGroupedSampler(lengths, 16, num_replicas=1, rank=0, shuffle=True, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(2000))
    shuffled = random.Random(1).sample(range(2000), 2000)
    assert _padded(order, lengths, 16) < 0.7 * _padded(shuffled, lengths, 16)
    assert _padded(order, lengths, 16) < 1.1 * sum(lengths)


def test_order_is_fixed_per_epoch_and_changes_between_epochs():
    lengths = _lengths(1000)

    def order(epoch: int) -> list[int]:
        sampler = LengthGroupedSampler(lengths, 8, num_replicas=1, rank=0, shuffle=True, seed=5)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0) == order(0)  # a resumed run skips exactly the batches it trained on
    assert order(0) != order(1)


def test_workers_get_disjoint_shares_that_cover_the_data():
    lengths = _lengths(999)
    shares = [
        list(LengthGroupedSampler(lengths, 8, num_replicas=3, rank=r, shuffle=True, seed=0))
        for r in range(3)
    ]
    assert sorted(i for share in shares for i in share) == list(range(999))


def test_small_data_keeps_the_plain_shuffled_order():
    lengths = _lengths(MIN_BATCHES * 4 - 1)
    grouped = LengthGroupedSampler(lengths, 4, num_replicas=1, rank=0, shuffle=True, seed=7)
    plain = DistributedSampler(lengths, num_replicas=1, rank=0, shuffle=True, seed=7)
    assert list(grouped) == list(plain)
