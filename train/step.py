"""How the parts of a training step run: eagerly, or compiled (the recipe's ``compile``).

    none             eager PyTorch: the fallback, and the reference the tests compare the others with
    default          torch.compile (Inductor): forward and losses as fused graphs, their backward compiled by
                     AOTAutograd; the optimizer step and the EMA update of the target as one more graph
    max-autotune     the same with GEMM / Triton autotuning (longer compiles), without CUDA graphs
    reduce-overhead  the same as default, replayed as CUDA graphs (no per-kernel launch cost: small models)

``true`` / ``false`` (older recipes and checkpoints) read as default / none. The step itself stays in
``train.pretrain.train_step`` (forward -> backward -> ``update``: optimizer step and EMA); this module only
builds its ``forward`` and ``update``. With ``update`` compiled, the learning rates and the EMA rate are 0-d
tensors on the device, refilled every step (``optim.set_learning_rate``), so a new value is a new input, not
a recompilation; nothing in a step reads a value back to the host.

reduce-overhead replays the forward, its backward and the update as one tree of CUDA graphs (torch's "CUDAGraph
Trees"), whose outputs live in one memory pool that each step reuses. torch's rule for a whole training step
(the CUDAGraph Trees page, "Limitations": memory cannot persist between runs through the model) is kept so:
- each step is one generation: its first compiled call marks the begin (``torch.compiler.cudagraph_mark_step_begin``;
  the forward, or the GPU pipeline's augmentation before it), so the update, a later compiled call, reads the
  backward's outputs of the same step instead of starting a new generation that frees them;
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
from typing import Any, Callable, Dict, Optional, Tuple

import torch

COMPILE_MODES: Dict[str, Any] = {
    "none": None, "default": "default", "max-autotune": "max-autotune-no-cudagraphs",
    "reduce-overhead": "reduce-overhead",
}
CACHE_ENV = "LADDER_ZOO_COMPILE_CACHE"
CACHE_AFTER_STEPS = 3  # every graph (forward, backward, update) has compiled by then, recompilations included


def compile_mode(value: Any) -> str:
    """The mode named by a recipe's ``compile`` (booleans of older recipes included)."""
    if isinstance(value, bool):
        return "default" if value else "none"
    if value not in COMPILE_MODES:
        raise ValueError(f"compile={value!r}: choose one of {', '.join(COMPILE_MODES)}")
    return value


def compile_options(mode: str) -> Dict[str, Any]:
    """``torch.compile`` keyword arguments of a mode other than none."""
    return {"mode": COMPILE_MODES[compile_mode(mode)]}


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


class Forward:
    """The compiled forward of a step: under CUDA graphs it begins the step's generation (unless ``marks_step`` is
    False: a compiled call before it did); it saves the compile cache once the first steps compiled every graph."""

    def __init__(self, net: torch.nn.Module, mode: str, cache: Optional[CompileCache] = None, marks_step=True):
        self.compiled = torch.compile(net, **compile_options(mode))
        self.marks_step = marks_step and mode == "reduce-overhead"
        self.cache, self.calls = cache, 0

    def __call__(self, views):
        if self.cache is not None and self.calls == CACHE_AFTER_STEPS:
            self.cache.save()
        self.calls += 1
        if self.marks_step:
            torch.compiler.cudagraph_mark_step_begin()  # forward, backward and update: one step, one generation
        return self.compiled(views)


def build_step(net: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str,
               device: torch.device, name: str = "step", marks_step: bool = True) -> Tuple[Callable, Update]:
    """(forward, update) of ``train.pretrain.train_step`` for the mode. ``net`` is the module to run forward
    (the model, or its DDP wrapper), ``model`` the model itself (its EMA update); ``name`` names the compile
    cache this run saves (with ``$LADDER_ZOO_COMPILE_CACHE``; the first process of a distributed run saves it);
    ``marks_step=False`` where the views come from a compiled call that began the step (GpuPipeline.augment)."""
    mode = compile_mode(mode)
    if mode == "none":
        return net, Update(model, optimizer, mode, device)
    cache = None
    if os.environ.get(CACHE_ENV):
        writer = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        cache = CompileCache(Path(os.environ[CACHE_ENV]), f"{name}.{mode}", device, writer)
    return Forward(net, mode, cache, marks_step), Update(model, optimizer, mode, device)
