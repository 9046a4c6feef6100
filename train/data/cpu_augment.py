"""Pipeline (a): decode and augment in DataLoader workers with torchvision.transforms.v2, image by image.

The reference for the batched GPU pipeline (``gpu_augment.py``), which applies the same operations in the same
order with the same parameter distributions, MULAN's (``augmentations.py``): crop and flip on the uint8 image
(bicubic or bilinear, antialiased; the uint8 result saturates to [0, 255]), to float, cutout (cutout views: one
block filled with the mean colour), colour jitter (random order), grayscale, blur, solarize, normalise.
"""
import math
from typing import Iterator, List, Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from ..config import DataConfig
from .imagefolder import ImageFolder, record_unreadable
from .pipeline import Pipeline, Views
from .sampler import StepPlan, StepSampler
from .views import ViewSpec, group_views

INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


class MeanCutout(torch.nn.Module):
    """MULAN's RandomCutout: one block of ``area`` of the image (uniform fraction), log-uniform aspect in
    ``ratio``, w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)), the first of 10 draws with
    0 < w <= W and 0 < h <= H at a uniform integer position, else the central block (as RandomResizedCrop's
    fallback); filled with ``fill`` (the data set's mean colour, float images in [0, 1])."""

    def __init__(self, area: Sequence[float], ratio: Sequence[float], fill: Sequence[float]):
        super().__init__()
        self.area, self.ratio = tuple(area), tuple(ratio)
        self.fill = torch.tensor(fill, dtype=torch.float32).view(3, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = height * width * torch.empty(1).uniform_(*self.area).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,)))
                left = int(torch.randint(0, width - w + 1, size=(1,)))
                break
        else:
            in_ratio = width / height
            w, h = width, height
            if in_ratio < min(self.ratio):
                h = int(round(w / min(self.ratio)))
            elif in_ratio > max(self.ratio):
                w = int(round(h * max(self.ratio)))
            top, left = (height - h) // 2, (width - w) // 2
        out = image.clone()
        out[:, top:top + h, left:left + w] = self.fill.to(image.dtype)
        return out


def view_transform(spec: ViewSpec, data: DataConfig) -> v2.Compose:
    aug = data.augment
    ops = [
        v2.RandomResizedCrop(spec.size, scale=spec.scale, interpolation=INTERPOLATION[aug.interpolation],
                             antialias=True),
        v2.RandomHorizontalFlip(aug.flip_p),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if spec.cutout:
        ops.append(MeanCutout(aug.cutout_area, aug.cutout_ratio, data.mean))
    ops += [
        v2.RandomApply([v2.ColorJitter(*aug.jitter)], p=aug.jitter_p),
        v2.RandomGrayscale(aug.gray_p),
        v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, sigma=aug.blur_sigma)], p=spec.blur_p),
        v2.RandomSolarize(threshold=0.5, p=spec.solarize_p),
        v2.Normalize(data.mean, data.std),
    ]
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


class CpuPipeline(Pipeline):
    """The views made in DataLoader workers, image by image: a batch is the step's views already; ``views`` moves
    them to the device."""

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool):
        super().__init__(images, specs, data, sampler, device, channels_last)
        self.dataset = AugmentedImages(images, specs, data)

    def batches(self, start: int, stop: int) -> Iterator[List[torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=StepPlan(self.sampler, start, stop), num_workers=self.data.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.data.workers else None,
        )
        for views, bad in loader:
            record_unreadable(self.bad_images, bad)
            yield views

    def views(self, batch: List[torch.Tensor], step: int) -> Views:
        return group_views(self.specs, [v.to(self.device, non_blocking=True, memory_format=self.memory_format)
                                        for v in batch])
