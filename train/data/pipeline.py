"""What the training loop asks of a data pipeline; ``CpuPipeline`` (``cpu_augment.py``) and ``GpuPipeline``
(``gpu_augment.py``) answer it alike, each splitting the work between DataLoader workers and the device its own way."""
from typing import Any, Dict, Iterator, List

import torch

from ..config import DataConfig
from .imagefolder import ImageFolder
from .sampler import StepSampler
from .views import ViewSpec

Views = Dict[str, List[torch.Tensor]]  # {view kind: [one tensor per view, float [B, 3, s, s] on the device]}


class Pipeline:
    """The images of each step, as a pure function of (seed, step), and their views on the device.

    ``batches(start, stop)`` yields the batch of every step from ``start`` to ``stop - 1`` as the DataLoader hands it
    over; ``views(batch, step)`` makes that step's views on the device. ``steps_per_epoch`` and ``names`` (the set's
    files, relative to ``data.path``) describe the set; ``bad_images`` lists the files that could not be decoded
    (each replaced by the next readable one), each once, in the order met.
    """

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool):
        self.images, self.specs, self.data, self.sampler, self.device = images, specs, data, sampler, device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bad_images: List[str] = []

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def names(self) -> List[str]:
        return self.images.names

    def batches(self, start: int, stop: int) -> Iterator[Any]:
        raise NotImplementedError

    def views(self, batch: Any, step: int) -> Views:
        raise NotImplementedError
