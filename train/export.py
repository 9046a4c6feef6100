"""Export a pretraining checkpoint as a Hub repository folder that ladder_zoo loads.

    python -m train.export runs/R/last.pt --out hub/ladder-zoo/ladder_byol_r18_cifar.cifar10_200ep \\
        [--dtype fp16|fp32] [--eval runs/R/eval.json] [--register] [--push-to-hub [REPO_ID]]

Writes config.json, model.safetensors (shards past 24 MB) and a README.md card with the recipe, the training
state and any evaluation figures; ``--register`` records every file's sha256 in ``ladder_zoo/releases.json`` so
``create_model(name, pretrained=True)`` loads it (from the Hub, its cache, or this folder); ``--push-to-hub``
uploads the folder with huggingface_hub (and records the commit when registering).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml

from ladder_zoo import load_ssl_checkpoint
from ladder_zoo.models import ARCHITECTURES
from ladder_zoo.publish import default_card, register_release, write_hub_folder

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def export(checkpoint: Path, out: Path, dtype: str = "fp16", eval_json: Optional[Path] = None) -> Path:
    ckpt = load_ssl_checkpoint(checkpoint)
    arch = ckpt.model_name
    if arch not in ARCHITECTURES:
        raise ValueError(f"{checkpoint} trained '{arch}', which is not a ladder-zoo name; only zoo models export.")
    name, _, tag = out.name.partition(".")
    if name != arch or not tag:
        raise ValueError(f"--out must end in '{arch}.<tag>' (the Hub repository of one tag), got {out.name}")
    cfg = ckpt.config
    epochs_done = ckpt.step / (ckpt.data or {}).get("steps_per_epoch", 1)
    evaluation = json.loads(eval_json.read_text()) if eval_json else None
    body = _card_body(ckpt, epochs_done, evaluation)
    from ladder_zoo import create_model

    card = default_card(arch, tag, create_model(f"{arch}.{tag}").pretrained_cfg, body)
    extra = {"method": cfg["method"], "recipe": cfg["name"], "step": ckpt.step, "epochs": round(epochs_done, 3)}
    if evaluation:
        extra["evaluation"] = evaluation
    return write_hub_folder(out, arch, tag, ckpt.backbone_state_dict(), dtype=DTYPES[dtype], card=card, extra=extra)


def _card_body(ckpt, epochs_done: float, evaluation: Optional[dict]) -> str:
    cfg = ckpt.config
    lines = [
        "",
        "## Training",
        f"Recipe `{cfg['name']}` ({cfg['epochs']} epochs planned), exported after step {ckpt.step} "
        f"({epochs_done:.1f} epochs), global batch {cfg['batch_size']}, levels `{cfg['method']['levels']}` "
        f"over {cfg['method']['base']}.",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).rstrip(),
        "```",
    ]
    if evaluation:
        lines += ["", "## Evaluation", "", "```json", json.dumps(evaluation, indent=2), "```"]
    return "\n".join(lines) + "\n"


def push(folder: Path, repo_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=f"ladder-zoo export {folder.name}")
    return info.oid


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="hub/<org>/<arch>.<tag>")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--eval", type=Path, help="evaluation JSON (train.eval) to put in the card and config")
    parser.add_argument("--register", action="store_true", help="record the files' sha256 in ladder_zoo/releases.json")
    parser.add_argument("--push-to-hub", nargs="?", const="", metavar="REPO_ID",
                        help="upload the folder (repository id: the last two parts of --out unless given)")
    args = parser.parse_args(argv)
    folder = export(args.checkpoint, args.out, args.dtype, args.eval)
    repo_id = args.push_to_hub or "/".join(args.out.parts[-2:])
    revision = push(folder, repo_id) if args.push_to_hub is not None else None
    if args.register:
        entry = register_release(repo_id, folder, revision)
        print(f"registered {repo_id}: " + ", ".join(f"{k} {v[:12]}" for k, v in entry["files"].items()))
    print(f"exported {args.checkpoint} -> {folder}" + (f" (pushed to {repo_id} @ {revision})" if revision else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
