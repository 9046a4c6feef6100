"""Checkpoints that resume exactly: written atomically (temporary file, fsync, rename), holding the whole
Siamese model (online, heads, EMA target), optimizer, schedule position, RNG states and data position.

The format is ``ladder_zoo.weights.SSL_FORMAT``; ``ladder_zoo.load_ssl_checkpoint`` reads it, and
``ladder_zoo.create_model(name, checkpoint_path=...)`` takes its online backbone.
"""
import os
import random
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ladder_zoo import load_ssl_checkpoint
from ladder_zoo.weights import SSL_FORMAT, SSLCheckpoint

from .config import Config, to_dict

# Keys that may differ between a run and its resumption: they steer the run, not what it computes.
RUN_CONTROL_KEYS = {"resume", "max_steps", "checkpoint_every", "log_every", "tensorboard", "progress", "out_dir",
                    "data.workers", "data.path", "compile"}


def save(path: Path, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
         steps_per_epoch: int, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write the checkpoint after ``step`` steps (the next step to run is ``step``)."""
    state = {
        "format": SSL_FORMAT,
        "model_name": cfg.model,
        "config": to_dict(cfg),
        "step": step,
        "epoch": step // steps_per_epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"kind": "warmup_cosine", "step": step},  # the schedule is a pure function of the step
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": list(random.getstate()[1]),
        },
        "data": {"step": step, "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch,
                 "steps_per_epoch": steps_per_epoch, "global_batch": cfg.batch_size, "seed": cfg.seed},
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def restore(ckpt: SSLCheckpoint, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load a checkpoint of the same recipe into model and optimizer; returns the step to continue from."""
    differ = _differences(ckpt.config, to_dict(cfg))
    if differ:
        raise ValueError(
            f"{ckpt.path} was written by a different recipe ({', '.join(differ)}); an exact resume needs the same "
            "one. Pass resume=none (or another out_dir) to start over."
        )
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer)
    rng = ckpt.rng or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "python" in rng:
        random.setstate((3, tuple(rng["python"]), None))
    return ckpt.step


def find_resume(cfg: Config) -> Optional[SSLCheckpoint]:
    if cfg.resume == "none":
        return None
    path = cfg.run_dir / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
    if path.is_dir():  # a run folder: its latest checkpoint
        path = path / "last.pt"
    if not path.is_file():
        if cfg.resume == "auto":
            return None
        raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint")
    return load_ssl_checkpoint(path)


def _differences(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> list:
    out = []
    for key in sorted(set(a) | set(b)):
        name = prefix + key
        if name in RUN_CONTROL_KEYS:
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], name + ".")
        elif a.get(key) != b.get(key):
            out.append(f"{name}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
