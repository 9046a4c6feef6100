"""Every schedule of a run, a pure function of the step: learning rate (warmup, cosine, scaled from the
reference batch), weight decay (constant or cosine) and BYOL's EMA rate tau.

    lr_k  = peak (k + 1) / W                                        k < W (warmup steps)
            floor + (peak - floor) (1 + cos(pi (k - W) / (K - W))) / 2   otherwise;  peak, floor x lr_scale
    wd_k  = wd_end + (wd - wd_end) (1 + cos(pi k / (K - 1))) / 2    (optim.weight_decay_end; else constant)
    tau_k = tau_end - (tau_end - tau_0) (cos(pi k / K) + 1) / 2     (BYOL: tau_0 -> 1; tau_end = tau_0: constant)
"""
import math

from .config import Config


LR_SCALING = {"linear": lambda r: r, "sqrt": math.sqrt, "none": lambda r: 1.0}


def lr_scale(cfg: Config) -> float:
    """Factor from the reference batch's rates (``optim.lr``, ``optim.min_lr`` at ``optim.ref_batch``) to this
    run's ``batch_size``: the reference's rule, e.g. linear as BYOL's 0.2 x batch / 256."""
    if cfg.optim.ref_batch is None:
        return 1.0
    return LR_SCALING[cfg.optim.lr_scaling](cfg.batch_size / cfg.optim.ref_batch)


def describe_lr(cfg: Config) -> str:
    """One start-up line saying which peak rate the run uses and why."""
    o = cfg.optim
    if o.ref_batch is None:
        return f"lr {o.lr:g} (optim.ref_batch unset: not scaled with batch_size {cfg.batch_size})"
    if o.ref_batch == cfg.batch_size:
        return f"lr {o.lr:g} at the reference batch {o.ref_batch}"
    return (f"lr {o.lr:g} is the rate at batch {o.ref_batch}; batch_size {cfg.batch_size} scales it ({o.lr_scaling} "
            f"rule, optim.lr_scaling) to {o.lr * lr_scale(cfg):.4g}, min_lr to {o.min_lr * lr_scale(cfg):.4g}")


def learning_rate(step: int, cfg: Config, steps_per_epoch: int) -> float:
    """Linear warmup from 0 over ``warmup_epochs``, then a cosine (without restart) to ``min_lr``; both rates
    scaled from the reference batch (``lr_scale``)."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    peak, floor = cfg.optim.lr * lr_scale(cfg), cfg.optim.min_lr * lr_scale(cfg)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def weight_decay(step: int, cfg: Config, steps_per_epoch: int) -> float:
    """``optim.weight_decay``, or with ``optim.weight_decay_end`` a cosine from it to that over the whole run
    (DINO's schedule; MULAN declares ``--wd-end`` but its main.py never reads it: constant)."""
    o = cfg.optim
    if o.weight_decay_end is None:
        return o.weight_decay
    progress = step / max(1, cfg.epochs * steps_per_epoch - 1)
    return o.weight_decay_end + (o.weight_decay - o.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_tau(step: int, total_steps: int, tau0: float, tau_end: float = 1.0) -> float:
    """BYOL's cosine EMA schedule, from tau0 at step 0 to tau_end (BYOL: 1) at the last step."""
    return tau_end - (tau_end - tau0) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2
