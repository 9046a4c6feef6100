"""Checkpoints that resume exactly: written atomically (temporary file, fsync, rename), holding the whole
Siamese model (online, heads, EMA target), optimizer, schedule position, RNG states and data position.

A run folder keeps its last ``keep_checkpoints`` checkpoints: ``last.pt`` (the newest) and ``step-XXXXXXX.pt``
(older ones, named by their step). ``resume=auto`` takes the newest readable one: a truncated or corrupt
``last.pt`` falls back to the previous checkpoint with a warning. A failed write (disk full) leaves every
existing checkpoint as it was and stops the run with ``CheckpointWriteError``. The checkpoint records the data
set's file list (count, sha256, compressed names) so that a resume on a changed set is an error naming the
difference, not a silent change of the sampler's order.

The format (``SSL_FORMAT``) is train/'s own: ``load_ssl_checkpoint`` (also ``train.load_ssl_checkpoint``) reads it
for continued training, evaluation and export. Where its backbones are is the zoo's to say, as for any trainer's
checkpoint (``ladder_zoo.layouts``: the online backbone and its EMA target, ``backbone.`` and ``target_backbone.``
of ``model``): ``SSLCheckpoint.backbone_state_dict`` and ``create_backbone`` read them so, as does
``ladder_zoo.create_model(name, checkpoint_path=...)``.
"""
import errno
import hashlib
import os
import random
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

import ladder_zoo
from ladder_zoo.errors import WeightsMismatchError
from ladder_zoo.layouts import backbone
from ladder_zoo.models import MODELS
from ladder_zoo.weights import torch_load

from .config import Config, to_dict
from .model import build_backbone

SSL_FORMAT = "ladder-zoo-ssl/1"

# Keys that may differ between a run and its resumption: they steer the run, not what it computes.
RUN_CONTROL_KEYS = {"resume", "max_steps", "checkpoint_every", "log_every", "tensorboard", "progress", "out_dir",
                    "data.workers", "data.path", "compile", "keep_checkpoints", "data.allow_changed"}

LAST = "last.pt"
_OLDER = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class SSLCheckpoint:
    """A training checkpoint as ``Checkpoints.save`` writes it: the whole Siamese model (online backbone under
    ``backbone.``, projectors, predictors, EMA target under ``target_backbone.``), optimizer, schedule position,
    RNG states and data position."""

    path: Path
    model_name: str
    config: Dict[str, Any]
    step: int
    epoch: int
    model: Dict[str, torch.Tensor]
    optimizer: Optional[Dict[str, Any]] = None
    scheduler: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None
    data: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def backbone_state_dict(self, target: bool = False) -> Dict[str, torch.Tensor]:
        """The online backbone (default) or the EMA target backbone, keyed like the zoo model."""
        try:
            return backbone(self.model, "target" if target else "online").state
        except WeightsMismatchError as e:
            raise WeightsMismatchError(f"{self.path}: {e}") from None

    def create_backbone(self, target: bool = False, **kwargs) -> torch.nn.Module:
        """The run's backbone (its ``model`` with the recipe's ``model_kwargs``) carrying this checkpoint's online
        weights, or with ``target=True`` its EMA target's: a zoo name through ``ladder_zoo.create_model`` with
        ``kwargs`` (``features_only=True``, ...), a timm name as ``train.model.build_backbone`` makes it."""
        kwargs = {**self.config.get("model_kwargs", {}), **kwargs}
        if self.model_name in MODELS:
            return ladder_zoo.create_model(self.model_name, checkpoint_path=self.path,
                                           pretrained_weights="target" if target else "online", **kwargs)
        model = build_backbone(self.model_name, **kwargs)  # timm's loader reads no training checkpoint
        model.load_state_dict(self.backbone_state_dict(target))
        return model


def load_ssl_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> SSLCheckpoint:
    """Read a training checkpoint (backbone, heads, EMA target, optimizer, RNG, data position): to resume, evaluate
    or export a run. A file that is not one (an exported Hub folder, a plain weight file) is a one-line error."""
    path = Path(path)
    if path.is_dir():
        what = ("an exported Hub folder (config.json), not a training checkpoint: load it with "
                f"ladder_zoo.create_model(NAME, checkpoint_path='{path}')" if (path / "config.json").is_file()
                else "a folder, not a training checkpoint: name a run's last.pt")
        raise WeightsMismatchError(f"{path} is {what}.")
    raw = torch_load(path, map_location)
    if not (isinstance(raw, dict) and raw.get("format") == SSL_FORMAT):
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise WeightsMismatchError(
            f"{path} is not a training checkpoint of train/ (format {found!r}, expected {SSL_FORMAT!r}). For plain "
            "weight files use ladder_zoo.create_model(name, checkpoint_path=...)."
        )
    known = {"format", "model_name", "config", "step", "epoch", "model", "optimizer", "scheduler", "rng", "data"}
    return SSLCheckpoint(
        path=path, model_name=raw["model_name"], config=raw["config"], step=raw["step"], epoch=raw["epoch"],
        model=raw["model"], optimizer=raw.get("optimizer"), scheduler=raw.get("scheduler"), rng=raw.get("rng"),
        data=raw.get("data"), extra={k: v for k, v in raw.items() if k not in known},
    )


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous ones are untouched."""


def state(cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, steps_per_epoch: int,
          extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The checkpoint after ``step`` steps (the next step to run is ``step``), as ``Checkpoints.save`` writes it."""
    return {
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


def _write(folder: Path, state: Dict[str, Any]) -> Path:
    """``state`` in a complete, fsynced temporary file of ``folder``; on failure nothing is left behind."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{LAST}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write of its zip stream as RuntimeError
        tmp.unlink(missing_ok=True)
        if isinstance(e.__context__, KeyboardInterrupt):  # Ctrl-C inside torch.save: its zip writer then fails too
            raise e.__context__ from None
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        full = " (disk full: free space, or set out_dir on another disk)" if _is_enospc(e) else ""
        before = _step_of(folder / LAST)
        kept = f"{folder / LAST} (step {before}) is intact" if before is not None else "none was written before"
        raise CheckpointWriteError(f"could not write the checkpoint of step {state['step']} to {folder}: "
                                   f"{cause}{full}; the previous checkpoint {kept}. Fix the disk, then resume=auto."
                                   ) from e
    return tmp


class Checkpoints:
    """The run folder's checkpoints: ``last.pt`` plus the ``keep - 1`` newest ``step-XXXXXXX.pt``.

    ``save`` writes the new checkpoint to a temporary file first; only once it is complete (fsynced) does the
    old ``last.pt`` become ``step-<its step>.pt`` and the new file ``last.pt``, then the oldest beyond ``keep``
    are deleted. A crash between the two renames leaves the previous checkpoint under its step name, which
    ``find_resume`` also reads.
    """

    def __init__(self, run_dir: Path, keep: int):  # keep >= 1: config.check
        self.run_dir, self.keep = Path(run_dir), keep

    def save(self, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
             steps_per_epoch: int, extra: Optional[Dict[str, Any]] = None) -> Path:
        last = self.run_dir / LAST
        for stale in self.run_dir.glob(f".{LAST}.tmp-*"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
        tmp = _write(self.run_dir, state(cfg, model, optimizer, step, steps_per_epoch, extra))
        if last.exists():
            previous = _step_of(last)
            if previous is None:  # unreadable: kept for a post-mortem, never resumed from
                os.replace(last, self.run_dir / f"{LAST}.corrupt")
            elif self.keep > 1 and previous != step:
                os.replace(last, self.run_dir / f"step-{previous:07d}.pt")
        os.replace(tmp, last)
        for old in older_checkpoints(self.run_dir)[self.keep - 1:]:
            old.unlink(missing_ok=True)
        folder = os.open(self.run_dir, os.O_RDONLY)  # the renames themselves survive a power loss
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return last


def older_checkpoints(run_dir: Path) -> List[Path]:
    """``step-XXXXXXX.pt`` files of ``run_dir``, newest first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("step-*.pt") if (m := _OLDER.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _step_of(path: Path) -> Optional[int]:
    """The step a checkpoint holds, None when it is missing or unreadable (reads only its small records)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return None


def _is_enospc(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def restore(ckpt: SSLCheckpoint, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            files: Optional[Dict[str, Any]] = None) -> int:
    """Load a checkpoint of the same recipe (and, given ``files``, the same data files) into model and
    optimizer; returns the step to continue from."""
    differ = _differences(ckpt.config, to_dict(cfg))
    if differ:
        raise ValueError(
            f"{ckpt.path} was written by a different recipe ({', '.join(differ)}); an exact resume needs the same "
            "one. Pass resume=none (or another out_dir) to start over."
        )
    if files is not None and not cfg.data.allow_changed:
        check_data_files(ckpt, files, cfg.data.path)
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
    """resume=auto: the newest readable checkpoint of the run folder (``last.pt``, then ``step-*.pt`` newest
    first), warning about each unreadable one skipped; resume=<path>: that file; resume=none: None."""
    if cfg.resume == "none":
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        if path.is_dir():  # a run folder: its latest checkpoint
            path = path / LAST
        if not path.is_file():
            raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint")
        return load_ssl_checkpoint(path)
    last = cfg.run_dir / LAST
    candidates = ([last] if last.is_file() else []) + older_checkpoints(cfg.run_dir)
    for i, path in enumerate(candidates):
        try:
            return load_ssl_checkpoint(path)
        except Exception as e:  # truncated, corrupt, or not a checkpoint of this project
            more = f"trying {candidates[i + 1].name}" if i + 1 < len(candidates) else "no older checkpoint is left"
            warnings.warn(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); {more}",
                          stacklevel=2)
    if candidates:
        raise RuntimeError(f"resume=auto: no readable checkpoint in {cfg.run_dir} (tried {len(candidates)}); "
                           "pass resume=none (or another out_dir) to start over.")
    return None


def data_fingerprint(names: Sequence[str]) -> Dict[str, Any]:
    """The data set's file list as a checkpoint records it: count, sha256 and zlib-compressed sorted names
    (relative to data.path; a few MB for ImageNet's 1.28 M names)."""
    blob = "\n".join(sorted(names)).encode()
    return {"count": len(names), "sha256": hashlib.sha256(blob).hexdigest(), "names": zlib.compress(blob, 6)}


def check_data_files(ckpt: SSLCheckpoint, files: Dict[str, Any], data_path: str) -> None:
    """Raise a one-line ValueError naming the files added and removed since ``ckpt`` was written."""
    saved = ckpt.extra.get("data_files")
    if not saved or saved["sha256"] == files["sha256"]:
        return
    before = set(zlib.decompress(saved["names"]).decode().split("\n")) if saved["count"] else set()
    now = set(zlib.decompress(files["names"]).decode().split("\n")) if files["count"] else set()
    added, removed = sorted(now - before), sorted(before - now)

    def few(names: List[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    what = "; ".join(part for part in (f"{len(added)} added ({few(added)})" if added else "",
                                       f"{len(removed)} removed ({few(removed)})" if removed else "") if part)
    raise ValueError(
        f"data.path={data_path} changed since {ckpt.path} (step {ckpt.step}): {what or 'file list differs'}; "
        f"{saved['count']} -> {files['count']} files would silently change the order of every later step. "
        "Restore the files, or pass data.allow_changed=true to continue on the new list."
    )


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
