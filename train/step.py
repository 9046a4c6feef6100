"""A run's training step, in one place: ``Step`` makes the batch's views, then ``train_step`` runs the forward
(features per level -> heads -> per-level losses, weighted sum), the backward, gradient clipping and ``Update``
(optimizer step, then the EMA update of the target); the loop of ``train/pretrain.py`` and ``train/bench.py`` call
it. Each part runs eagerly or compiled, as the recipe's ``compile`` says (``compile_modes.py``):

    none             eager PyTorch: the fallback, and the reference the tests compare the others with
    default          torch.compile (Inductor): forward and losses as fused graphs, their backward compiled by
                     AOTAutograd; the optimizer step and the EMA update of the target as one more graph
    max-autotune     the same with GEMM / Triton autotuning (longer compiles), without CUDA graphs
    reduce-overhead  the same as default, replayed as CUDA graphs (no per-kernel launch cost: small models)

``true`` / ``false`` (older recipes and checkpoints) read as default / none. With ``update`` compiled, the learning
rates and the EMA rate are 0-d tensors on the device, refilled every step (``Step.set_rates``), so a new value is a
new input, not a recompilation; nothing in a step reads a value back to the host. The GPU pipeline's in-memory
augmentation is compiled in the same mode (``data/gpu_augment.py``): it is the first compiled call of a step.

reduce-overhead replays the step's graphs (a compiled augmentation, the forward, its backward, the update) as one
tree of CUDA graphs (torch's "CUDAGraph Trees"), whose outputs live in one memory pool that each step reuses.
torch's rule for a whole training step (the CUDAGraph Trees page, "Limitations": memory cannot persist between
runs through the model) is kept so:
- each step is one generation: ``Step`` marks its begin (``torch.compiler.cudagraph_mark_step_begin``) before
  the views are made, so the step's first compiled call (the augmentation or the forward) begins it and the update,
  a later compiled call, reads the backward's outputs of the same step instead of starting a new generation that
  frees them;
- the gradients are fresh outputs of the compiled backward every step: ``train_step`` sets them to None before
  the forward (``zero_grad(set_to_none=True)``), and the update graph reads them where the backward wrote them,
  without a copy. Zeroing them in place instead writes into memory that the next step's graphs have reclaimed:
  "accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run" (pytorch#169545);
- the optimizer state, the learning rates and the EMA rate exist before the first step, at fixed addresses
  (``mark_static_address``): the graphs read and update them in place, never create them.

A compiled run loads and saves Inductor's compile cache (``torch.compiler.save_cache_artifacts``) where
``$LADDER_ZOO_COMPILE_CACHE`` names a folder: FOLDER/<stack>/*.bin are loaded before the first step, where
<stack> names this GPU, torch and triton (a cache of another stack is never read), and the graphs this run
compiled are saved as FOLDER/<stack>/<recipe>.<mode>.bin once its first steps have run.
"""
import os
import platform
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .compile_modes import compile_mode, compile_options
from .config import Config
from .data.pipeline import Views
from .optim import group_rates

CACHE_ENV = "LADDER_ZOO_COMPILE_CACHE"
CACHE_AFTER_STEPS = 3  # every graph (forward, backward, update) has compiled by then, recompilations included


def stack_key(device: torch.device) -> str:
    """The GPU (or CPU architecture), torch and triton this process compiles for, as a folder name."""
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = "none"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{hardware}-torch{torch.__version__}-triton{triton}")


class CompileCache:
    """Inductor's compile cache of one run: FOLDER/<stack>/*.bin loaded now, this run's saved by ``save``."""

    def __init__(self, folder: Path, name: str, device: torch.device, writer: bool = True):
        self.folder = Path(folder) / stack_key(device)
        self.path = self.folder / f"{name}.bin"
        self.writer = writer  # one process of a distributed run writes
        self.loaded = []
        for path in sorted(self.folder.glob("*.bin")):
            try:  # a damaged cache costs a compile, never the run
                why = "" if torch.compiler.load_cache_artifacts(path.read_bytes()) else "no cache of this torch"
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
            if why:
                print(f"train.step: compile cache {path} not loaded ({why})", file=sys.stderr)
            else:
                self.loaded.append(path.name)

    def save(self) -> Optional[Path]:
        """This process's compiled artifacts into ``path`` (not over a file loaded at the start)."""
        if not self.writer or self.path.name in self.loaded:
            return None
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(artifacts[0])
        partial.replace(self.path)
        return self.path


class Update:
    """Optimizer step, then the EMA update of the target (a no-op for SimSiam); ``update(tau)``."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str, device: torch.device):
        self.model, self.optimizer = model, optimizer
        self.compiled = None
        # AdamW takes a tensor lr only with capturable=True: its step stays eager (a float lr that changes every
        # step would recompile a graph every step), the EMA update is compiled alone
        self.eager_optimizer = mode == "none" or isinstance(optimizer, torch.optim.AdamW)
        for group in optimizer.param_groups:  # a checkpoint of a compiled run holds tensor lrs
            lr = float(group["lr"])
            group["lr"] = lr if self.eager_optimizer else torch.tensor(lr, device=device)
        if mode != "none":
            self.tau = torch.zeros((), device=device)
            # state, learning rates and tau keep their addresses across steps: CUDA graphs read them in place
            for t in [self.tau, *(g["lr"] for g in optimizer.param_groups),
                      *(v for state in optimizer.state.values() for v in state.values())]:
                if torch.is_tensor(t):
                    torch._dynamo.mark_static_address(t)
            target = model.update_target if self.eager_optimizer else self._update
            self.compiled = torch.compile(target, **compile_options(mode))

    def _update(self, tau):
        self.optimizer.step()
        self.model.update_target(tau)

    def __call__(self, tau: float) -> None:
        if self.compiled is None:
            return self._update(tau)
        if self.eager_optimizer:
            self.optimizer.step()
        self.tau.fill_(tau)
        self.compiled(self.tau)


class Step:
    """A run's training step, eager or compiled as ``cfg.compile`` says: ``step(batch, index, tau)`` makes the views
    of step ``index``'s batch (``views(batch, index)``: the data pipeline's) and runs ``train_step`` on them, with
    ``cfg``'s autocast and gradient clipping; ``set_rates`` sets the step's learning rates and weight decay before.
    ``net`` is the module to run forward (the model, or its DDP wrapper), ``model`` the model itself (its EMA update).
    A compiled run saves its compile cache as ``cfg.name`` (with ``$LADDER_ZOO_COMPILE_CACHE``; the first process of a
    distributed run writes it)."""

    def __init__(self, cfg: Config, net: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 views: Callable[[Any, int], Views], device: torch.device):
        mode = compile_mode(cfg.compile)
        self.optimizer, self.views, self.clip_grad = optimizer, views, cfg.optim.clip_grad
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
        self.update = Update(model, optimizer, mode, device)
        self.forward, self.cache, self.calls = net, None, 0
        self.marks_step = mode == "reduce-overhead"
        if mode != "none":
            self.forward = torch.compile(net, **compile_options(mode))
            if os.environ.get(CACHE_ENV):
                writer = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
                self.cache = CompileCache(Path(os.environ[CACHE_ENV]), f"{cfg.name}.{mode}", device, writer)

    def set_rates(self, lr: float, peak: float, weight_decay: Optional[float] = None) -> None:
        """The step's rates (``optim.group_rates``: ``lr``, ``peak`` in the fixed-lr predictor's group, and a scheduled
        ``weight_decay``) into the optimizer's groups; a rate the compiled update reads as a tensor is refilled in
        place, at its address."""
        for group in self.optimizer.param_groups:
            for key, value in group_rates(group, lr, peak, weight_decay).items():
                if torch.is_tensor(group[key]):
                    group[key].fill_(value)
                else:
                    group[key] = value

    def __call__(self, batch: Any, index: int, tau: float) -> Dict[str, torch.Tensor]:
        if self.cache is not None and self.calls == CACHE_AFTER_STEPS:
            self.cache.save()
        self.calls += 1
        if self.marks_step:  # this step's compiled calls, from the augmentation to the update: one generation
            torch.compiler.cudagraph_mark_step_begin()
        return train_step(self.forward, self.update, self.optimizer, self.views(batch, index), self.autocast, tau,
                          self.clip_grad)


def train_step(forward: Callable[[Views], Dict[str, torch.Tensor]], update: Update, optimizer: torch.optim.Optimizer,
               views: Views, autocast, tau: float, clip_grad: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """Forward (features per level -> heads -> per-level losses, weighted sum in ``loss``), backward, gradient
    norm clipped to ``clip_grad`` (if set), then ``update``: optimizer step and EMA update of the target (BYOL;
    a no-op for SimSiam). Returns the forward's outputs."""
    # the last step's gradients go before this step begins: every step's are new outputs of the backward (under
    # CUDA graphs, memory the next step reclaims), never written once the step has ended
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        out = forward(views)
    out["loss"].backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"] if p.grad is not None],
                                       clip_grad)
    update(tau)
    return out
