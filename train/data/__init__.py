"""Data: ImageFolder sets from folders or tars, the per-step sampler, views and the two augmentation pipelines."""
import dataclasses
import os

import torch

from ..config import Config
from .cpu_augment import CpuPipeline
from .gpu_augment import GpuPipeline
from .imagefolder import ImageFolder
from .pipeline import Pipeline
from .sampler import StepSampler
from .views import view_specs


def build_pipeline(cfg: Config, rank: int, world: int, device: torch.device) -> Pipeline:
    """The configured pipeline over ``cfg.data`` for process ``rank`` of ``world`` (``pipeline.Pipeline``)."""
    data = dataclasses.replace(cfg.data, workers=usable_workers(cfg.data.workers))
    images = ImageFolder(data.path, data.split)
    sampler = StepSampler(len(images), cfg.batch_size, cfg.seed, rank, world)
    specs = view_specs(data, cfg.method.views)
    if data.pipeline == "cpu":
        return CpuPipeline(images, specs, data, sampler, device, cfg.channels_last)
    if data.pipeline == "gpu":
        return GpuPipeline(images, specs, data, sampler, device, cfg.channels_last, cfg.compile)
    raise ValueError(f"data.pipeline='{cfg.data.pipeline}': choose gpu or cpu")


def usable_workers(asked: int) -> int:
    """``data.workers`` capped at this process's share of the CPUs it may run on: a recipe written for a
    16-core GPU node runs on a laptop without DataLoader's oversubscription warning (the augmentation does not
    depend on the number of workers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(asked, per_process)


__all__ = ["ImageFolder", "Pipeline", "StepSampler", "build_pipeline", "usable_workers", "view_specs"]
