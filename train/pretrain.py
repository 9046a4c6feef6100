"""Self-supervised pretraining: one recipe (YAML) -> a run folder with checkpoints, log.jsonl and TensorBoard.

    torchrun --nproc_per_node=G [--nnodes=N --rdzv_endpoint=...] -m train.pretrain --config train/configs/R.yaml [k=v ...]
    python -m train.pretrain --config train/configs/R.yaml [key=value ...]      (one process, CPU included)

The path of one batch, top to bottom in ``train`` (the step itself: ``train/step.py``):
    images (sampler: step -> indices) -> views (augmentation, per-image randomness) -> online backbone features
    per level -> projector -> predictor | target projection -> per-level losses -> weighted sum -> backward
    -> optimizer step -> EMA update -> log (loss per level, collapse std, img/s) -> checkpoint.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from ladder_zoo.errors import WeightsError
from ladder_zoo.models import MODELS

from . import checkpoint, distributed, preemption
from .config import Config, check, check_paths, load_config, to_dict
from .data import build_pipeline
from .model import build_model
from .optim import build_optimizer
from .runlog import RunLog
from .schedules import describe_lr, ema_tau, learning_rate, lr_scale, weight_decay
from .step import Step


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; the last checkpoint on disk is the last good one."""


def train(cfg: Config) -> Path:
    """Run ``cfg`` to its end; raises ``preemption.Preempted`` after checkpointing on SIGTERM / SIGUSR1 / SIGINT."""
    check(cfg)  # a Config built in code is range-checked as a loaded recipe is
    check_paths(cfg)  # before any start-up work: a wrong path is one line, not a traceback after decoding
    with preemption.Watch() as preempt:
        return _train(cfg, preempt)


def _train(cfg: Config, preempt: preemption.Watch) -> Path:
    env = distributed.setup(cfg.device)
    torch.backends.cudnn.benchmark = True  # fixed shapes every step: the fastest convolution algorithms, found once
    torch.manual_seed(cfg.seed)
    run_dir = cfg.run_dir
    data = build_pipeline(cfg, env.rank, env.world, env.device)
    steps_per_epoch = data.steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    stop = min(total, cfg.max_steps or total)

    model = build_model(cfg)
    _check_normalisation(cfg, model.backbone)
    if env.world > 1 and cfg.sync_bn:
        model = distributed.convert_sync_batchnorm(model, env.device)
    model = model.to(env.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg.optim, model.predictor_parameters())
    checkpoints = checkpoint.Checkpoints(run_dir, cfg.keep_checkpoints)
    files = checkpoint.data_fingerprint(data.names)  # a resume on changed files is an error
    resumed = checkpoint.find_resume(cfg)
    start = checkpoint.restore(resumed, cfg, model, optimizer, files) if resumed else 0
    net = model
    if env.world > 1:
        net = DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None,
                                      broadcast_buffers=False)
    train_step = Step(cfg, net, model, optimizer, data.views, env.device)  # eager, or compiled (train/step.py)

    log = RunLog(run_dir, env.main, cfg.tensorboard, cfg.progress, start, stop, cfg.batch_size)
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        log.message(f"{cfg.name}: {cfg.model}, levels '{cfg.method.levels}', {env.world} process(es) on "
                    f"{env.device.type}, steps {start}..{stop} of {total}" + (f" (resumed {resumed.path})" if resumed else ""))
        log.message(describe_lr(cfg))
        if start >= stop:  # the same command run again: resume=auto found the finished run
            log.message(f"nothing to train: {resumed.path} already holds step {start}, the last of this run "
                        f"(max_steps={cfg.max_steps}, epochs={cfg.epochs}). Raise max_steps or epochs to go on, or "
                        "start over in a fresh out_dir= (or with resume=none).")
    nonfinite = torch.zeros((), device=env.device)
    checked, reported_bad, stopped_by = start, 0, 0
    model.train()
    batches = log.timed(data.batches(start, stop))
    peak_lr = cfg.optim.lr * lr_scale(cfg)
    for step in range(start, stop):
        lr = learning_rate(step, cfg, steps_per_epoch)
        decay = weight_decay(step, cfg, steps_per_epoch) if cfg.optim.weight_decay_end is not None else None
        train_step.set_rates(lr, peak_lr, decay)
        tau = ema_tau(step, total, cfg.method.tau, cfg.method.tau_end)
        out = train_step(next(batches), step, tau)  # views of the loaded batch -> forward -> backward -> update
        nonfinite += ~torch.isfinite(out["loss"].detach())
        log.accumulate(out)
        log.step()

        done = step + 1
        stopped_by = preempt.agreed()  # every rank stops after the same step, whichever got the signal
        save = done % cfg.checkpoint_every == 0 or done == stop or stopped_by > 0
        if done % cfg.log_every == 0 or save:
            _guard(nonfinite, model, checked, done, run_dir)
            checked = done
            log.flush(done, {"epoch": done / steps_per_epoch, "lr": lr, "tau": tau, "bad_images": len(data.bad_images)})
            if len(data.bad_images) > reported_bad:
                log.message(f"skipped unreadable images (replaced by the next readable one): "
                            f"{', '.join(data.bad_images[reported_bad:])}")
                reported_bad = len(data.bad_images)
        if save and env.main:
            checkpoints.save(cfg, model, optimizer, done, steps_per_epoch,
                             extra={"bad_images": list(data.bad_images), "data_files": files})
        if stopped_by and done < stop:
            log.close()
            preempt.stop(done, stopped_by, run_dir / checkpoint.LAST)
    log.close()
    distributed.cleanup()
    return run_dir


def _check_normalisation(cfg: Config, backbone: torch.nn.Module) -> None:
    """A zoo model's exported weights declare its pretrained_cfg mean / std: training must use the same."""
    if cfg.model not in MODELS:
        return
    declared = backbone.pretrained_cfg
    for key in ("mean", "std"):
        if any(abs(a - b) > 1e-4 for a, b in zip(getattr(cfg.data, key), declared[key])):
            raise ValueError(
                f"data.{key}={list(getattr(cfg.data, key))} differs from {cfg.model}'s pretrained_cfg {key} "
                f"{list(declared[key])}: its exported weights would be used with another normalisation. Set "
                f"data.{key}={list(declared[key])}, or train a timm name instead of a zoo name."
            )


def _guard(nonfinite: torch.Tensor, model: torch.nn.Module, checked: int, done: int, run_dir: Path) -> None:
    weights_finite = torch.isfinite(torch.stack(torch._foreach_norm(list(model.parameters())))).all()
    if bool(nonfinite > 0) or not bool(weights_finite):
        last = run_dir / checkpoint.LAST
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"the loss or the weights became non-finite between steps {checked} and {done}; {kept}. Lower optim.lr "
            "(or lengthen optim.warmup_epochs), check the data, then resume from it."
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="recipe YAML (train/configs/*.yaml); defaults without")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.5 epochs=1 data.path=...")
    parser.add_argument("--print-config", action="store_true",
                        help="print the recipe resolved (its _base_ files, defaults and overrides) and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None), end="")
            return 0
        check_paths(cfg)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        train(cfg)
    except (ValueError, FileNotFoundError, WeightsError) as e:  # bad input met after start-up: one line, no traceback
        print(f"train.pretrain: error: {e}", file=sys.stderr)
        return 2
    except preemption.Preempted as e:
        print(f"train.pretrain: {e}", file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:  # a second Ctrl-C (preemption.Watch), or one outside the training loop
        print(f"\ntrain.pretrain: stopped at once by Ctrl-C; the checkpoints written before stay as they were "
              f"(resume=auto continues from {cfg.run_dir / checkpoint.LAST} if it exists)", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except (TrainingDiverged, checkpoint.CheckpointWriteError) as e:
        print(f"train.pretrain: stopped: {e}", file=sys.stderr)
        return 3 if isinstance(e, TrainingDiverged) else 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
