"""torch.distributed set-up for torchrun (NCCL on GPUs, gloo on CPUs) and SyncBatchNorm on either."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from ladder_zoo.device import resolve_device


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK), or run as a single process."""
    cuda = resolve_device(device).type == "cuda"  # CUDA asked for where there is none: one line
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if cuda:
        torch.cuda.set_device(local_rank)
        return Dist(rank, world, torch.device("cuda", local_rank))
    return Dist(rank, world, torch.device("cpu"))


_HOST_GROUP = {}


def host_group():
    """A gloo group for small host-side collectives (preemption flag, log means): the default group on CPUs,
    a gloo group beside NCCL on GPUs, so that these collectives do not wait on the GPU stream."""
    if dist.get_backend() == "gloo":
        return None
    if "group" not in _HOST_GROUP:
        _HOST_GROUP["group"] = dist.new_group(backend="gloo")
    return _HOST_GROUP["group"]


def gather_rows(row: torch.Tensor) -> torch.Tensor:
    """[world, n]: the 1-D float tensor ``row`` of every process, on the host (one all_gather); [1, n] alone."""
    row = row.detach().float().cpu()
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return row[None]
    rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, row, group=host_group())
    return torch.stack(rows)


def cleanup() -> None:
    _HOST_GROUP.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU process groups (gloo), where torch's SyncBatchNorm has no kernels.

    The batch mean and variance are summed over processes with a differentiable all_reduce, so forward and
    backward are those of BatchNorm over the global batch, as torch.nn.SyncBatchNorm computes them on GPUs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        stats = dist_fn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels:2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * n / (n - 1), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm*d of ``module`` synchronised across processes: torch's SyncBatchNorm on GPUs, the
    equivalent ``CpuSyncBatchNorm`` on CPUs."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CpuSyncBatchNorm):
            sync = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module
