"""Pipeline (a): decode and augment in DataLoader workers with torchvision.transforms.v2, image by image.

The reference for the batched GPU pipeline (``gpu_augment.py``), which applies the same operations in the same
order with the same parameter distributions: crop, flip, colour jitter (random order), grayscale, blur,
solarize, normalise, cutout.
"""
from typing import Iterator, List

import torch
from torchvision.transforms import v2

from ..config import DataConfig
from .imagefolder import ImageFolder, record_unreadable
from .sampler import StepPlan, StepSampler
from .views import ViewSpec, group_views


def view_transform(spec: ViewSpec, data: DataConfig) -> v2.Compose:
    aug = data.augment
    ops = [
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(spec.size, scale=spec.scale, antialias=True),
        v2.RandomHorizontalFlip(aug.flip_p),
        v2.RandomApply([v2.ColorJitter(*aug.jitter)], p=aug.jitter_p),
        v2.RandomGrayscale(aug.gray_p),
        v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, sigma=aug.blur_sigma)], p=spec.blur_p),
        v2.RandomSolarize(threshold=0.5, p=spec.solarize_p),
        v2.Normalize(data.mean, data.std),
    ]
    if spec.cutout:
        ops.append(v2.RandomErasing(p=1.0, scale=aug.cutout_area, ratio=aug.cutout_ratio, value=0.0))
    return v2.Compose(ops)


class AugmentedImages(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> (one tensor per view spec, names of images that could not be decoded)."""

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig):
        self.images = images
        self.transforms = [view_transform(s, data) for s in specs]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index, seed = item
        bad: List[str] = []
        _, image = self.images.decode(index, lambda name, e: bad.append(name))
        with torch.random.fork_rng(devices=[]):  # the image's own seed: independent of workers and processes
            torch.manual_seed(seed)
            return [t(image) for t in self.transforms], bad


def collate(samples):
    views = [torch.stack(v) for v in zip(*(s[0] for s in samples))]
    return views, [name for s in samples for name in s[1]]


class CpuPipeline:
    """Batches of augmented views from DataLoader workers; ``augment`` only moves them to the device."""

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool):
        self.images, self.dataset = images, AugmentedImages(images, specs, data)
        self.specs, self.data, self.sampler = specs, data, sampler
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bad_images: List[str] = []  # each unreadable file once, in the order met

    def batches(self, start_step: int, stop_step: int) -> Iterator:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=StepPlan(self.sampler, start_step, stop_step), num_workers=self.data.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.data.workers else None,
        )
        for views, bad in loader:
            record_unreadable(self.bad_images, bad)
            yield views

    def augment(self, batch, step: int):
        views = [v.to(self.device, non_blocking=True, memory_format=self.memory_format) for v in batch]
        return group_views(self.specs, views)
