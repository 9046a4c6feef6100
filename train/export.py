"""Export a pretraining checkpoint as a Hub repository folder that ladder_zoo loads.

    python -m train.export runs/R/last.pt --out hub/ladder-zoo/ladder_byol_r18_cifar.cifar10_200ep \\
        [--dtype fp16|fp32] [--eval runs/R/eval.json] [--register] [--push-to-hub [REPO_ID]] [--max-shard-size 24MB]
    python -m train.export hub/ladder-zoo/NAME.TAG --eval EVAL.json [--register]     (evaluated after the export)

Writes config.json, model.safetensors (in shards past ``--max-shard-size``, default 24 MB) and a README.md card with
the recipe, the training state and any evaluation figures. Any run exports under any tag
(``--out runs/R/export/<name>.my_test``, ``name`` the run's zoo model) and loads by path: ``create_model(name,
checkpoint_path=folder)``. ``--register`` is for releases: a declared tag (``ladder-zoo list``) exported from a run
that finished its recipe; it records every file's sha256 in the release record (the checkout's tracked
``ladder_zoo/releases.json``, or ``$LADDER_ZOO_RELEASES``) so ``create_model(name, pretrained=True)`` loads it (from
the Hub, its cache, or this folder); ``--push-to-hub`` uploads the folder with huggingface_hub (and
records the commit when registering). An exported folder given in place of the checkpoint gets the evaluation
``--eval`` names (one that ran after the export, on another machine or once the run's checkpoints were gone): card
and config.json as ``--eval`` writes them, the weights untouched; ``--register`` then re-records a release's sha256.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml

from ladder_zoo import hub, models
from ladder_zoo.errors import WeightsError
from ladder_zoo.models import MODELS
from ladder_zoo.publish import HUB_MAX_SHARD_SIZE, register_release, with_evaluation, write_hub_folder
from ladder_zoo.weights import config_name

from .checkpoint import SSLCheckpoint, load_ssl_checkpoint
from .config import load_config

CHECKOUT = Path(__file__).resolve().parents[1]  # the source checkout of train/, where models.recipe_path points
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
TAG = re.compile(r"[A-Za-z0-9_-]+")


def check_release(ckpt: SSLCheckpoint, checkpoint: Path, out: Path) -> None:
    """``--register`` records a release: only a declared tag, from a run of its own recipe that finished."""
    name, _, tag = out.name.partition(".")
    declared = [t for t in models.default_cfgs[name].tags if t] if name in MODELS else []
    if tag not in declared:
        raise ValueError(f"--register records release tags only ({name}: {', '.join(declared) or 'none declared'}); "
                         f"'{tag}' is a run's own export: load it by path, create_model('{name}', "
                         f"checkpoint_path='{out}'), without --register")
    recipe = Path(models.recipe_path(name, tag))
    total = ckpt.config["epochs"] * (ckpt.data or {}).get("steps_per_epoch", 0)
    path = CHECKOUT / recipe
    planned = load_config(str(path)).epochs if path.is_file() else ckpt.config["epochs"]
    shortened = ckpt.config["epochs"] != planned
    if ckpt.config["name"] != recipe.stem or ckpt.step < total or shortened:
        epochs = f" ({ckpt.config['epochs']} epochs, the recipe's {planned})" if shortened else ""
        raise ValueError(f"--register records finished runs of {recipe}; {checkpoint} is recipe "
                         f"'{ckpt.config['name']}' at step {ckpt.step} of {total}{epochs}. Export it without "
                         "--register (it loads by path)")


def export(checkpoint: Path, out: Path, dtype: str = "fp16", eval_json: Optional[Path] = None,
           release: bool = False, max_shard_size: str = HUB_MAX_SHARD_SIZE) -> Path:
    """Write the Hub folder ``out`` of the checkpoint's online backbone; ``release``: only if ``check_release``
    passes (nothing is written otherwise)."""
    ckpt = load_ssl_checkpoint(checkpoint)
    if release:
        check_release(ckpt, checkpoint, out)
    name = ckpt.model_name
    if name not in MODELS:
        raise ValueError(f"{checkpoint} trained '{name}', which is not a ladder-zoo name; only zoo models export.")
    out_name, _, tag = out.name.partition(".")
    if out_name != name or not TAG.fullmatch(tag):
        raise ValueError(f"--out must end in '{name}.<tag>' (the Hub repository of one tag; a tag is letters, digits, "
                         f"_ and -), got {out.name}")
    cfg = ckpt.config
    epochs_done = ckpt.step / (ckpt.data or {}).get("steps_per_epoch", 1)
    evaluation = json.loads(eval_json.read_text()) if eval_json else None
    extra = {"method": cfg["method"], "recipe": cfg["name"], "step": ckpt.step, "epochs": round(epochs_done, 3)}
    if evaluation:
        extra["evaluation"] = evaluation
    return write_hub_folder(out, name, tag, ckpt.backbone_state_dict(), dtype=DTYPES[dtype],
                            card_body=_card_body(ckpt, epochs_done), extra=extra, max_shard_size=max_shard_size)


def _card_body(ckpt, epochs_done: float) -> str:
    cfg = ckpt.config
    lines = [
        "",
        "## Training",
        f"Run `{cfg['name']}` ({cfg['epochs']} epochs planned), exported after step {ckpt.step} "
        f"({epochs_done:.1f} epochs), global batch {cfg['batch_size']}, levels `{cfg['method']['levels']}` "
        f"over {cfg['method']['base']}. Its config:",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


def attach_evaluation(folder: Path, eval_json: Path) -> Path:
    """Put ``eval_json`` (train.eval's JSON of these weights) into an exported folder's config.json and card, as
    an export with ``--eval`` would have; the weights are not touched."""
    config_path, card_path = folder / "config.json", folder / "README.md"
    if not config_path.is_file() or not card_path.is_file():
        raise ValueError(f"{folder} holds no config.json and README.md: not a folder train.export wrote")
    config, evaluation = json.loads(config_path.read_text()), json.loads(eval_json.read_text())
    name = config_name(config)
    if evaluation.get("model") != name:
        raise ValueError(f"{eval_json} evaluates {evaluation.get('model')!r}, not {folder}'s {name}: "
                         f"evaluate the folder itself (python -m train.eval {folder})")
    config["ladder_zoo"]["evaluation"] = evaluation
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    tag = config["pretrained_cfg"]["tag"]
    card_path.write_text(with_evaluation(card_path.read_text(), name, tag, config["pretrained_cfg"], evaluation))
    return folder


def push(folder: Path, repo_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=f"ladder-zoo export {folder.name}")
    return info.oid


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path,
                        help="a run's checkpoint (runs/R/last.pt), or an exported folder to add --eval to")
    parser.add_argument("--out", type=Path, help="hub/<org>/<name>.<tag> (with a checkpoint)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--eval", type=Path, help="evaluation JSON (train.eval) to put in the card and config")
    parser.add_argument("--register", action="store_true",
                        help="release: record the files' sha256 in the checkout's ladder_zoo/releases.json or "
                             "$LADDER_ZOO_RELEASES (a declared tag from a finished run of its recipe)")
    parser.add_argument("--push-to-hub", nargs="?", const="", metavar="REPO_ID",
                        help="upload the folder (repository id: the last two parts of --out unless given)")
    parser.add_argument("--max-shard-size", default=HUB_MAX_SHARD_SIZE, metavar="SIZE",
                        help=f"weights past this go into shards, e.g. 15MB (default {HUB_MAX_SHARD_SIZE}: hub/'s files "
                             "stay under 25 MB)")
    args = parser.parse_args(argv)
    if args.register and hub.source_checkout() is None and not os.environ.get(hub.RELEASES_ENV):
        parser.error(f"--register writes the release record of a source checkout, and ladder_zoo is imported from "
                     f"{Path(hub.__file__).parent}, an installed package: run from the checkout (pip install -e .), or "
                     f"set {hub.RELEASES_ENV} to the record to write")
    source = args.checkpoint
    if source.is_dir():  # an export that gets its evaluation
        repo_id = args.push_to_hub or "/".join(source.resolve().parts[-2:])
        if not args.eval:
            parser.error(f"{source} is an exported folder: name the evaluation to add to it, --eval EVAL.json")
        if args.register and not hub.is_published(repo_id):
            parser.error(f"--register with a folder re-records a release, and {repo_id} is none: register it by "
                         "exporting its finished run's checkpoint")
        try:
            folder = attach_evaluation(source, args.eval)
        except (ValueError, OSError) as e:
            parser.error(str(e))
    elif not source.is_file():
        parser.error(f"{source}: no such checkpoint (a run folder's last.pt, written by train.pretrain) or folder")
    elif args.out is None:
        parser.error("--out is required with a checkpoint: the folder hub/<org>/<name>.<tag> to write")
    else:
        try:
            folder = export(source, args.out, args.dtype, args.eval, release=args.register,
                            max_shard_size=args.max_shard_size)
        except (ValueError, OSError, WeightsError) as e:
            parser.error(str(e))
        repo_id = args.push_to_hub or "/".join(args.out.parts[-2:])
    revision = push(folder, repo_id) if args.push_to_hub is not None else None
    if args.register:
        entry = register_release(repo_id, folder, revision)
        print(f"registered {repo_id}: " + ", ".join(f"{k} {v[:12]}" for k, v in entry["files"].items()))
    done = f"added {args.eval} to {folder}" if source.is_dir() else f"exported {source} -> {folder}"
    print(done + (f" (pushed to {repo_id} @ {revision})" if revision else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
