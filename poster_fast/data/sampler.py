"""Class-balanced sampling, sharded across DDP ranks."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch


class BalancedSampler(torch.utils.data.Sampler[int]):
    """Class-balanced sampling with replacement (weight 1/class count, len(dataset) draws
    per epoch, as torchsampler.ImbalancedDatasetSampler), sharded across DDP ranks."""

    def __init__(self, targets: Sequence[int], num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        counts = np.bincount(np.asarray(targets))
        self.weights = torch.as_tensor(1.0 / counts[np.asarray(targets)], dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(targets) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)  # same draw on every rank
        idx = torch.multinomial(self.weights, self.num_samples * self.num_replicas, True, generator=g)
        return iter(idx[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
