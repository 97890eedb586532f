"""The order in which a training epoch draws its images, sharded across DDP ranks.

An epoch's order depends only on (seed, epoch): the same for any number of processes, which
deal it round-robin (rank r takes positions r, r + world, ...). Each draw carries the seed its
augmentation draws from, derived from (seed, epoch, position), so that what an image looks like
depends neither on the process nor on the data-loader worker that loads it, and an epoch can be
continued from any position (a run resumed mid-epoch).
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch


class Draw(NamedTuple):
    """One draw of an epoch: the image's index in the dataset and the seed of its augmentation."""

    index: int
    seed: int


def derived_seed(*numbers: int) -> int:
    """A 63-bit seed mixed from `numbers` by NumPy's SeedSequence (distinct tuples give unrelated seeds)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSampler(torch.utils.data.Sampler[Draw]):
    """This rank's draws of an epoch: `num_samples` = ceil(size / ranks) of them; `order` gives the
    whole epoch's order, of length num_samples * ranks."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.size, self.num_replicas, self.rank, self.seed = size, num_replicas, rank, seed
        self.num_samples = math.ceil(size / num_replicas)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw epoch `epoch`, from this rank's `start`-th draw on."""
        self.epoch, self.start = epoch, start

    def order(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Draw]:
        order = self.order(torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))).tolist()
        for local in range(self.start, self.num_samples):
            position = self.rank + local * self.num_replicas
            yield Draw(order[position], derived_seed(self.seed, self.epoch, position))

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShuffledSampler(EpochSampler):
    """A random permutation of the dataset each epoch, padded with its first indices to a
    multiple of the number of ranks (as torch's DistributedSampler)."""

    def order(self, generator: torch.Generator) -> torch.Tensor:
        perm = torch.randperm(self.size, generator=generator)
        total = self.num_samples * self.num_replicas
        return perm.repeat(math.ceil(total / self.size))[:total]


class BalancedSampler(EpochSampler):
    """Class-balanced sampling with replacement (weight 1/class count, len(dataset) draws
    per epoch, as torchsampler.ImbalancedDatasetSampler), sharded across DDP ranks."""

    def __init__(self, targets: Sequence[int], num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(len(targets), num_replicas, rank, seed)
        counts = np.bincount(np.asarray(targets))
        self.weights = torch.as_tensor(1.0 / counts[np.asarray(targets)], dtype=torch.double)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.weights, self.num_samples * self.num_replicas, True, generator=generator)
