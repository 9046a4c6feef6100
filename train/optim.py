"""Optimizers: LARS, SGD and AdamW over parameter groups (no weight decay / no adaptation for bias and norm
parameters, none on position embeddings and tokens), and which of a step's rates each group takes (``schedules.py``
computes them, ``step.Step.set_rates`` sets them)."""
from typing import Dict, List, Optional, Set

import torch
from torch import nn

from .config import OptimConfig


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017) as BYOL and solo-learn use it: SGD with momentum whose step for each adapted
    parameter w (gradient g) is scaled by a trust ratio,

        d = g + wd w,   r = eta ||w|| / (||g|| + wd ||w||)    (r = 1 where ||w|| or ||g|| is 0)
        clip_lr:        r = min(r, lr) / lr                    (layer rate min(eta ||w|| / (||g|| + wd ||w||), lr))
        v <- m v + r d,   w <- w - lr v

    Groups with ``lars=False`` (biases and norm parameters) take d = g + wd w unscaled; their weight decay is 0
    in the groups ``param_groups`` builds. A group's ``lr`` is a float, or a 0-d tensor as torch's own optimizers
    take one (``torch.optim.SGD``'s foreach step): a compiled update reads it at a fixed address (``train/step.py``),
    and the step then reads no value back to the host.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 clip_lr: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr,
                                      lars=True))
        # made here, not at the first step: a step compiled as a CUDA graph (compile=reduce-overhead) must find its
        # state as inputs, not create it as outputs that the next replay overwrites
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, wd = group["lr"], group["weight_decay"]
            grads = [p.grad for p in params]
            if wd:
                updates = torch._foreach_add(grads, params, alpha=wd)
            else:  # read-only use needs no copy; the trust-ratio scaling below must not rescale p.grad in place
                updates = [g.clone() for g in grads] if group["lars"] else grads
            if group["lars"]:
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                ratio = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / (g_norm + wd * w_norm),
                                    torch.ones_like(w_norm))
                if group["clip_lr"] and torch.is_tensor(lr):  # no host read of a tensor lr
                    ratio = torch.where(lr > 0, ratio.clamp(max=lr) / lr.clamp(min=1e-30), ratio)
                elif group["clip_lr"] and lr > 0:
                    ratio = ratio.clamp(max=lr) / lr
                torch._foreach_mul_(updates, list(ratio.unbind()))
            buffers = []
            for p, u in zip(params, updates):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, updates)
            if torch.is_tensor(lr):  # as torch.optim.SGD's foreach step with a tensor lr
                torch._foreach_add_(params, torch._foreach_mul(buffers, -lr))
            else:
                torch._foreach_add_(params, buffers, alpha=-lr)
        return loss


def no_decay_names(model: nn.Module) -> Set[str]:
    """Full names of the parameters the backbone's timm ``no_weight_decay()`` lists (position embeddings, class /
    register tokens, Swin's relative position tables); ``model`` is the Siamese module (backbone under
    ``backbone.``) or a bare backbone."""
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    listed = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else set()
    return {prefix + name for name, _ in backbone.named_parameters() if name in listed}


def param_groups(model: nn.Module, cfg: OptimConfig, predictors: List[nn.Parameter]) -> List[Dict]:
    """Groups by (exempt from decay, fixed-lr predictor): ``lars``, ``weight_decay`` and ``decay`` (whether the
    weight-decay schedule applies) set per group. Exempt: bias and norm parameters (``exclude_bias_norm``: no decay
    and no LARS adaptation) and the backbone's ``no_weight_decay()`` tensors (``exclude_tokens``: no decay)."""
    fixed = {id(p) for p in predictors} if cfg.fixed_predictor_lr else set()
    tokens = no_decay_names(model) if cfg.exclude_tokens else set()
    groups: Dict[tuple, Dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = cfg.exclude_bias_norm and p.ndim <= 1
        token = name in tokens and not exempt
        key = (exempt, token, id(p) in fixed)
        group = groups.setdefault(key, dict(params=[], weight_decay=0.0 if exempt or token else cfg.weight_decay,
                                            decay=not (exempt or token), lars=not exempt, fixed_lr=key[2]))
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, predictors: List[nn.Parameter]) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, predictors)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.eta, clip_lr=cfg.clip_lars_lr)
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        for group in optimizer.param_groups:  # as LARS: state made here, not inside a step captured as a CUDA graph
            for p in group["params"]:         # (a zero buffer's first step, 0.9 x 0 + g, is SGD's clone of g)
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return optimizer
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    raise ValueError(f"optim.name='{cfg.name}': choose lars, sgd or adamw")


def group_rates(group: Dict, lr: float, peak: float, weight_decay: Optional[float] = None) -> Dict[str, float]:
    """A step's rates in one parameter group: ``lr`` (``peak`` in the fixed-lr predictor's group) and, when given
    (``optim.weight_decay_end``'s schedule), ``weight_decay`` in the decayed groups."""
    rates = {"lr": peak if group.get("fixed_lr") else lr}
    if weight_decay is not None and group.get("decay"):
        rates["weight_decay"] = weight_decay
    return rates


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, peak: float) -> None:
    """Every group's lr (``group_rates``), in an eager loop; a run's steps set theirs with ``step.Step.set_rates``."""
    for group in optimizer.param_groups:
        group["lr"] = group_rates(group, lr, peak)["lr"]


def set_weight_decay(optimizer: torch.optim.Optimizer, wd: float) -> None:
    """The decayed groups' weight decay (``group_rates``), in an eager loop."""
    for group in optimizer.param_groups:
        group["weight_decay"] = group_rates(group, 0.0, 0.0, wd).get("weight_decay", group["weight_decay"])
