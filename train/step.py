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
"""
from typing import Any, Callable, Dict, Tuple

import torch

COMPILE_MODES: Dict[str, Any] = {
    "none": None, "default": "default", "max-autotune": "max-autotune-no-cudagraphs",
    "reduce-overhead": "reduce-overhead",
}


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


class Update:
    """Optimizer step, then the EMA update of the target (a no-op for SimSiam); ``update(tau)``."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str, device: torch.device):
        self.model, self.optimizer = model, optimizer
        self.compiled = None
        # replayed as CUDA graphs, the update reads the gradients at fixed addresses: zeroed in place, never freed
        self.static_grads = mode == "reduce-overhead"
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


def build_step(net: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str,
               device: torch.device) -> Tuple[Callable, Update]:
    """(forward, update) of ``train.pretrain.train_step`` for the mode. ``net`` is the module to run forward
    (the model, or its DDP wrapper), ``model`` the model itself (its EMA update)."""
    mode = compile_mode(mode)
    forward = net if mode == "none" else torch.compile(net, **compile_options(mode))
    return forward, Update(model, optimizer, mode, device)
