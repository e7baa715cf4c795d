"""Endless streams of training batches whose position can be saved and restored exactly.

The trainer pulls ``(x0, labels)`` pairs (labels None for unconditional data) from a stream and
saves ``stream.state_dict()`` in every checkpoint, so that a resumed run sees the very batches the
uninterrupted run would have seen.

- :class:`SampledBatches`: fresh exact samples every step from a distribution with a sampler (toy
  data: infinite data, no epochs).
- :class:`LoaderBatches`: a finite dataset, reshuffled every epoch from (seed, epoch), read through a
  ``torch.utils.data.DataLoader``; resuming skips the batches already seen in the current epoch
  without loading them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["SampledBatches", "LoaderBatches", "Batch"]

Batch = tuple[torch.Tensor, Any]


class SampledBatches:
    """Batches drawn from ``sample(n, generator, return_labels=True) -> (x, labels)``.

    ``epoch`` is always 0 and ``batches_per_epoch`` None: the data never repeats.
    """

    def __init__(
        self, sample: Callable[..., tuple[torch.Tensor, torch.Tensor]], batch_size: int, seed: int
    ) -> None:
        self.sample = sample
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.batches_per_epoch: int | None = None

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.sample(self.batch_size, self.generator, return_labels=True)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class _EpochSampler(Sampler[int]):
    """A permutation of range(n) fixed by (seed, epoch), optionally sharded across ranks and started
    at an offset (in samples of this rank's share)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0
        self.start = 0

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        usable = (self.n // self.world_size) * self.world_size
        return order[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.n // self.world_size - self.start


class LoaderBatches:
    """Batches of ``batch_size`` from a map-style dataset returning ``(x0, label)`` pairs.

    The last incomplete batch of each epoch is dropped, so every batch has the same size.

    Args:
        dataset: items are ``(image tensor, label)``; labels may be ints, strings or None.
        rank, world_size: shard the data for distributed training (each rank sees its own share).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable | None = None,
    ) -> None:
        share = len(dataset) // world_size
        if share < batch_size:
            raise ValueError(
                f"the dataset has {len(dataset)} items ({share} per process), "
                f"fewer than one batch of {batch_size}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.sampler = _EpochSampler(len(dataset), seed, rank, world_size)
        self.batches_per_epoch = share // batch_size
        self.epoch = 0
        self.batch_in_epoch = 0

    def _loader(self) -> DataLoader:
        self.sampler.epoch = self.epoch
        self.sampler.start = self.batch_in_epoch * self.batch_size
        if hasattr(self.dataset, "flip_epoch"):  # random flips fixed by (seed, epoch, index)
            self.dataset.flip_seed, self.dataset.flip_epoch = self.sampler.seed, self.epoch
        # An own generator: DataLoader otherwise draws its worker base seed from the global RNG,
        # which would shift the training noise of a resumed run.
        generator = torch.Generator().manual_seed(self.sampler.seed * 1_000_003 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            drop_last=True,
            collate_fn=self.collate_fn,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
        )

    def __iter__(self) -> Iterator[Batch]:
        while True:
            for batch in self._loader():
                self.batch_in_epoch += 1
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                images, labels = batch
                yield images, labels
            if self.batch_in_epoch != 0:  # the loader stopped early (cannot happen with drop_last)
                self.epoch += 1
                self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
