"""Data: ImageFolder sets from folders or tars, the per-step sampler, views and the two augmentation pipelines."""
import torch

from ..config import Config
from .cpu_augment import CpuPipeline
from .gpu_augment import GpuPipeline
from .imagefolder import ImageFolder
from .sampler import StepSampler
from .views import view_specs


def build_pipeline(cfg: Config, rank: int, world: int, device: torch.device):
    """The configured pipeline over ``cfg.data``: ``batches(start, stop)`` to iterate, ``augment(batch, step)``
    to get the views on the device, ``bad_images`` listing images that could not be decoded."""
    images = ImageFolder(cfg.data.path, cfg.data.split)
    sampler = StepSampler(len(images), cfg.batch_size, cfg.seed, rank, world)
    specs = view_specs(cfg.data, cfg.method.views)
    if cfg.data.pipeline == "cpu":
        return CpuPipeline(images, specs, cfg.data, sampler, device, cfg.channels_last)
    if cfg.data.pipeline == "gpu":
        return GpuPipeline(images, specs, cfg.data, sampler, device, cfg.channels_last, cfg.seed, cfg.compile)
    raise ValueError(f"data.pipeline='{cfg.data.pipeline}': choose gpu or cpu")


__all__ = ["ImageFolder", "StepSampler", "build_pipeline", "view_specs"]
