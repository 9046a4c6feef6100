"""Which images step s reads, as a pure function of (seed, step): the basis of exact resume and of DDP runs
that equal a single process on the same global batch."""
from functools import lru_cache

import torch


class StepSampler:
    """Epoch e = step // steps_per_epoch reads a permutation drawn with seed (seed, e), one global batch per
    step (drop-last); process ``rank`` of ``world`` takes its contiguous slice of each global batch.

    Every draw of a step's augmentation comes from its ``step_seed``: the CPU pipeline's per-image seeds
    (``sample_seeds``: one per position in the global batch) and the GPU pipeline's draws for the whole global batch;
    so the views depend neither on the number of processes nor on the DataLoader workers.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch_size={global_batch} is not divisible by the {world} processes")
        if n < global_batch:
            raise ValueError(f"batch_size={global_batch} is larger than the {n} images of the data set")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.local_batch = global_batch // world
        self.steps_per_epoch = n // global_batch

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def global_indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._permutation(epoch)[k * self.global_batch:(k + 1) * self.global_batch]

    def local_slice(self) -> slice:
        return slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)

    def indices(self, step: int) -> torch.Tensor:
        return self.global_indices(step)[self.local_slice()]

    def step_seed(self, step: int) -> int:
        return self.seed * 1_000_003 + step

    def sample_seeds(self, step: int) -> torch.Tensor:
        first = self.step_seed(step) * self.global_batch
        return torch.arange(first, first + self.global_batch)[self.local_slice()]


class StepPlan:
    """The DataLoader's batch sampler: the ``(index, seed)`` items of steps start..stop-1, made lazily."""

    def __init__(self, sampler: StepSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield list(zip(self.sampler.indices(step).tolist(), self.sampler.sample_seeds(step).tolist()))
