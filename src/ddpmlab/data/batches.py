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

from ddpmlab.data.base import DataError

__all__ = ["SampledBatches", "LoaderBatches", "Batch"]

Batch = tuple[torch.Tensor, Any]


class SampledBatches:
    """Batches drawn from ``sample(n, generator, return_labels=True) -> (x, labels)``.

    ``epoch`` is always 0 and ``batches_per_epoch`` None: the data never repeats. In distributed
    training every rank has its own ``seed`` (its own i.i.d. stream). A saved state restores the
    stream exactly when it is loaded by the same ``rank``; loaded by another rank (e.g. after resuming
    with more processes) it only moves the stream to a fresh position fixed by (seed, batches drawn),
    so that no two ranks ever replay the same data.
    """

    def __init__(
        self,
        sample: Callable[..., tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        seed: int,
        rank: int = 0,
    ) -> None:
        self.sample = sample
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self.epoch = 0
        self.batches_per_epoch: int | None = None

    def __iter__(self) -> Iterator[Batch]:
        while True:
            self.batches_drawn += 1
            yield self.sample(self.batch_size, self.generator, return_labels=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "seed": self.seed,
            "rank": self.rank,
            "batches_drawn": self.batches_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_drawn = int(state.get("batches_drawn", 0))
        if state.get("rank", 0) == self.rank:
            self.generator.set_state(state["generator"])
        else:
            self.generator.manual_seed(self.seed * 1_000_003 + self.batches_drawn)


class _EpochSampler(Sampler[int]):
    """The positions ``start .. stop`` of a permutation of range(n) fixed by (seed, epoch), dealt out
    across ranks round-robin: rank r takes positions start + r, start + r + W, ... Read in batches of
    b per rank, global batch k (positions start + kWb .. start + (k+1)Wb) is then the same set of items
    whatever the number of ranks W: the W ranks' k-th batches together are one process's k-th batch of
    W * b."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0
        self.start = 0  # in positions of the epoch's permutation (all ranks together)
        self.stop = n

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        return order[self.start + self.rank : self.stop : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.stop - self.start) // self.world_size


class LoaderBatches:
    """Batches of ``batch_size`` from a map-style dataset returning ``(x0, label)`` pairs.

    Each epoch reads a permutation fixed by (seed, epoch) in global batches of ``batch_size *
    world_size`` items; the last incomplete global batch of each epoch is dropped, so every batch has
    the same size. The position is kept in items of the permutation (``sample_in_epoch``, all ranks
    together), which does not depend on the number of ranks: a run saved with W ranks continues with
    W' ranks from the same item of the same epoch (and, with the same global batch size, with the
    very batches the W ranks would have read).

    Args:
        dataset: items are ``(image tensor, label)``; labels may be ints, strings or None.
        rank, world_size: shard the data for distributed training (each rank reads its share of every
            global batch, see :class:`_EpochSampler`).
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
        self.global_batch = batch_size * world_size
        if len(dataset) < self.global_batch:
            raise ValueError(
                f"the dataset has {len(dataset)} items, fewer than one batch of {batch_size}"
                + (f" for each of {world_size} processes" if world_size > 1 else "")
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.sampler = _EpochSampler(len(dataset), seed, rank, world_size)
        self.batches_per_epoch = len(dataset) // self.global_batch
        self.epoch = 0
        self.sample_in_epoch = 0

    @property
    def batch_in_epoch(self) -> int:
        """Global batches read in the current epoch (counted from the epoch's start)."""
        return self.sample_in_epoch // self.global_batch

    @batch_in_epoch.setter
    def batch_in_epoch(self, value: int) -> None:
        self.sample_in_epoch = int(value) * self.global_batch

    def _fits(self) -> bool:
        """Whether one more full global batch is left in the current epoch."""
        return self.sample_in_epoch + self.global_batch <= len(self.dataset)

    def _loader(self) -> DataLoader:
        if not self._fits():
            self.epoch, self.sample_in_epoch = self.epoch + 1, 0
        start, size = self.sample_in_epoch, self.global_batch
        self.sampler.epoch, self.sampler.start = self.epoch, start
        self.sampler.stop = start + (len(self.dataset) - start) // size * size  # whole global batches
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

    def _read(self) -> Iterator[Batch]:
        """The batches of one loader; a DataError raised in a worker process keeps its own one-line
        message (DataLoader re-raises it wrapped in the worker's traceback)."""
        try:
            yield from self._loader()
        except DataError as error:
            text = str(error)
            if text.startswith("Caught ") and "Original Traceback" in text:
                last = text.strip().splitlines()[-1]
                raise DataError(last.split(": ", 1)[-1]) from None
            raise

    def __iter__(self) -> Iterator[Batch]:
        while True:
            epoch = self.epoch
            for batch in self._read():
                self.sample_in_epoch += self.global_batch
                if not self._fits():
                    self.epoch, self.sample_in_epoch = self.epoch + 1, 0
                images, labels = batch
                yield images, labels
            if self.epoch == epoch:  # the loader stopped early (cannot happen with drop_last)
                self.epoch, self.sample_in_epoch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "sample_in_epoch": self.sample_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        if "sample_in_epoch" in state:
            self.sample_in_epoch = int(state["sample_in_epoch"])
        else:  # checkpoints before distributed training: one process, position in its batches
            self.sample_in_epoch = int(state["batch_in_epoch"]) * self.batch_size
