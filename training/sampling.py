"""Batches of similar length: the training sampler.

Each batch is padded to its longest sequence (tasks.base.pad_batch), so a random batch of QA
windows costs its longest window times the batch size: on squad_new_wiki at 384 tokens the
windows average 171 tokens and random batches of 16 pad to 312. Grouping by length inside
mega-batches (transformers' `get_length_grouped_indices`: shuffle, cut into 50 batches' worth,
sort each by length) pads to about what is there and keeps the order random across mega-batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler
from transformers.trainer_pt_utils import get_length_grouped_indices

# below this many batches in a worker's share, grouping would sort within one batch only
MIN_BATCHES = 8


class LengthGroupedSampler(DistributedSampler):
    """This worker's share of the data, as DistributedSampler deals it for the epoch, reordered
    so that each run of `batch_size` indices has similar lengths. Deterministic per (seed,
    epoch, rank): a resumed run skips the same batches it trained on."""

    def __init__(self, lengths: Sequence[int], batch_size: int, **kwargs):
        self.lengths, self.batch_size = list(lengths), batch_size
        super().__init__(self.lengths, **kwargs)  # type: ignore[arg-type]  # sized is enough

    def __iter__(self) -> Iterator[int]:
        share = list(super().__iter__())
        if len(share) < MIN_BATCHES * self.batch_size:
            return iter(share)
        generator = torch.Generator().manual_seed(self.seed + 1000 * self.epoch + self.rank)
        order = get_length_grouped_indices(
            [self.lengths[i] for i in share], self.batch_size, generator=generator
        )
        return iter([share[i] for i in order])
