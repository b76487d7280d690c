"""The training input pipeline: a data order that can resume mid-epoch, seeded augmentation, workers.

Exact resume needs every batch after a checkpoint to be the same as without the interruption:

- The order of epoch ``e`` on each rank is a pure function of ``(seed, e, rank, world_size)``
  (:class:`ResumableSampler`, a ``DistributedSampler`` that can start at any position).
- The random augmentation of a batch is a pure function of ``(seed, e, index of its first
  item)``: the sampler hands each index a seed and :class:`SeededItems` loads each batch
  with the RNGs seeded by its first item's, in whichever worker process loads it. So no
  worker RNG state needs saving, and the images are the same with any number of workers.
- The ``DataLoader`` draws its workers' base seed from its own generator, never from the
  global RNG that dropout uses.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .preemption import STOP_SIGNALS

__all__ = [
    "ResumableSampler",
    "SeededItems",
    "default_workers",
    "ignore_stop_signals",
    "item_seed",
    "seeded_rngs",
    "train_loader",
]

# Data sets whose items are ready tensors in memory: worker processes would only add overhead.
_IN_MEMORY = frozenset({"digits", "synthetic"})
_MAX_AUTO_WORKERS = 8


_MASK = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of item ``index`` in epoch ``epoch`` (63 bits, well mixed)."""
    return _mix(_mix(_mix((seed + _GOLDEN) & _MASK) ^ epoch) ^ index) >> 1


class ResumableSampler(Sampler[tuple[int, int]]):
    """This rank's share of epoch ``e``'s permutation, from position ``start``: ``(index, item seed)`` pairs.

    The permutation and sharding are ``DistributedSampler``'s (shuffled with ``seed + epoch``,
    padded to a multiple of the world size). Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, dataset: Dataset[Any], *, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self._order: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.epoch, self.start = 0, 0

    @property
    def seed(self) -> int:
        return self._order.seed

    @property
    def num_samples(self) -> int:
        """Items per rank in a whole epoch."""
        return self._order.num_samples

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Yield epoch ``epoch``'s items from position ``start`` (items already trained are skipped)."""
        self._order.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i, index in enumerate(self._order):
            if i >= self.start:
                yield index, item_seed(self._order.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Run the body with torch (CPU), numpy and python RNGs seeded by ``seed``; restore them after."""
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA streams stay untouched
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


class SeededItems(Dataset[Any]):
    """``dataset`` indexed by ``(index, seed)`` pairs: items with their random transforms drawn from ``seed``.

    The ``DataLoader`` fetches whole batches through :meth:`__getitems__`, seeded once per
    batch (seeding costs ~50 µs, too much per item for in-memory data). ``defer=True``: the
    items are not transformed here but later on the device (:mod:`~irevnet.training.device_decode`),
    so each item gets its batch's seed appended instead, for the consumer to seed with.
    """

    def __init__(self, dataset: Dataset[Any], *, defer: bool = False) -> None:
        self.dataset, self.defer = dataset, defer

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_rngs(seed):
            return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        if self.defer:
            return [(*self.dataset[index], keys[0][1]) for index, _ in keys]
        with seeded_rngs(keys[0][1]):
            return [self.dataset[index] for index, _ in keys]


def default_workers(data: str, local_world_size: int = 1) -> int:
    """Loader processes per rank when not given: 0 for in-memory tensors, else the CPUs this
    rank's share of the machine has, less one for the training process, at most 8."""
    if data in _IN_MEMORY:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_AUTO_WORKERS, cpus // max(local_world_size, 1) - 1))


def ignore_stop_signals(worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: the stop signals are the main process's to handle."""
    # A scheduler signals every process of the job, Ctrl-C the terminal's whole process group;
    # the main process stops the run cleanly and shuts the workers down, so they must not die
    # first (that would fail the step).
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def train_loader(
    dataset: Dataset[Any],
    sampler: ResumableSampler,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    prefetch_factor: int = 4,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    defer_seeding: bool = False,
) -> DataLoader[Any]:
    """The training ``DataLoader``: persistent workers with prefetch, pinned memory on CUDA.

    ``defer_seeding``: see :class:`SeededItems` (``collate_fn`` then receives the seeds).
    """
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor, "worker_init_fn": ignore_stop_signals}
    return DataLoader(
        SeededItems(dataset, defer=defer_seeding),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(sampler.seed),
        **extra,
    )
