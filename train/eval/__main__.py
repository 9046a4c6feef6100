"""Evaluate pretrained backbones on an ImageFolder set with train and test splits (CIFAR-10 by default).

    python -m train.eval SOURCE [SOURCE ...] --data data/cifar10-jpeg.tar.gz --out runs/eval

SOURCE: a train/ checkpoint (runs/R/last.pt), a Hub-layout folder (hub/ladder-zoo/NAME.TAG), a published zoo
name, or an earlier evaluation's JSON (re-used as it is, for the summary across runs). Writes per source
OUT/<label>.json (kNN k=200, T=0.1 and linear-probe accuracy per stage, view-distance statistics, the command)
and OUT/<label>_views.safetensors (the distances); for all sources OUT/view_distances.png (Fig. 3),
OUT/summary.png and OUT/summary.md; for checkpoints OUT/<label>_gradmaps.png (Fig. 4). Seeds are fixed.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from ladder_zoo.device import resolve_device
from ladder_zoo.errors import WeightsError

from ..config import DataConfig, config_from_dict, load_config, recipe_file
from ..data import ImageFolder
from .features import across_classes, class_balanced, backbone_from, pooled_features
from .gradmaps import gradient_maps
from .knn import knn_accuracy
from .linear import linear_probe
from .plots import plot_gradient_maps, plot_summary, plot_view_distances, summary_table
from .views import view_distances


def recipe_data(model, meta: dict) -> DataConfig:
    """The augmentation a backbone was trained with: its checkpoint's recipe, or the recipe its Hub folder
    names, else BYOL's defaults at the weights' input size and normalisation."""
    if "config" in meta:
        return config_from_dict(meta["config"]).data
    recipe = recipe_file(meta.get("recipe", ""))
    if meta.get("recipe") and recipe.is_file():
        return load_config(str(recipe)).data
    cfg = model.pretrained_cfg
    return DataConfig(image_size=cfg["input_size"][-1], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def evaluate(source: str, args, train_set: ImageFolder, test_set: ImageFolder, device: torch.device) -> dict:
    model, name, meta = backbone_from(source)
    label = Path(source).name if Path(source).is_dir() else name + (f"@{meta['step']}" if "step" in meta else "")
    train_idx = class_balanced(train_set.labels, args.per_class, args.seed)
    test_idx = class_balanced(test_set.labels, args.per_class, args.seed)
    train_f = pooled_features(model, train_set, train_idx, device, args.batch_size, args.workers, f"{label} train")
    test_f = pooled_features(model, test_set, test_idx, device, args.batch_size, args.workers, f"{label} test")
    train_y, test_y = train_set.labels[train_idx].to(device), test_set.labels[test_idx].to(device)
    result = {"label": label, "source": source, "model": name,
              **{k: meta[k] for k in ("step", "epochs", "recipe") if k in meta},
              "data": args.data, "n_train": len(train_idx), "n_test": len(test_idx), "per_class": args.per_class,
              "seed": args.seed,
              "command": "python -m train.eval " + shlex.join(sys.argv[1:])}
    result["knn"] = {"k": args.k, "temperature": args.t, "accuracy": {
        level: knn_accuracy(train_f[level].to(device), train_y, test_f[level].to(device), test_y, args.k, args.t)
        for level in train_f}}
    if args.linear_epochs > 0:
        result["linear"] = {"epochs": args.linear_epochs, "lr": args.linear_lr, "accuracy": {
            level: linear_probe(train_f[level].to(device), train_y, test_f[level].to(device), test_y,
                                epochs=args.linear_epochs, lr=args.linear_lr, seed=args.seed,
                                desc=f"{label} linear {level}") for level in train_f}}

    shown = across_classes(test_set.labels, test_idx, args.views, args.seed)  # Fig. 3 and 4: every class
    images = [test_set.decode(i, lambda n, e: None)[1] for i in shown]
    images = torch.stack(images) if len({im.shape for im in images}) == 1 else images
    distances = view_distances(model, images, recipe_data(model, meta), device, args.seed)
    result["view_distance"] = {lv: {"mean": float(d.mean()), "median": float(d.median()), "n": len(d)}
                               for lv, d in distances.items()}
    out = Path(args.out)
    save_file({lv: d.contiguous() for lv, d in distances.items()}, str(out / f"{label}_views.safetensors"))
    if "checkpoint" in meta and args.gradmaps > 0 and isinstance(images, torch.Tensor):
        maps = gradient_maps(meta["checkpoint"], images[:args.gradmaps], device, args.seed)
        if maps:
            plot_gradient_maps(images[:args.gradmaps], maps, out / f"{label}_gradmaps.png", label)
    (out / f"{label}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.eval", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--data", default="data/cifar10-jpeg.tar.gz", help="ImageFolder root or tar with train/ and test/")
    parser.add_argument("--out", default="runs/eval")
    parser.add_argument("--per-class", type=int, default=0, help="images per class and split (0: all)")
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--t", type=float, default=0.1)
    parser.add_argument("--linear-epochs", type=int, default=100)
    parser.add_argument("--linear-lr", type=float, default=0.1)
    parser.add_argument("--views", type=int, default=1000, help="test images for the view distances")
    parser.add_argument("--gradmaps", type=int, default=6, help="test images for the gradient maps")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:  # one line, as every input error of the command
        print(f"python -m train.eval: error: {e}", file=sys.stderr)
        return 2
    sets: List[ImageFolder] = []
    results = []
    for source in args.sources:
        if source.endswith(".json"):
            results.append(json.loads(Path(source).read_text()))
            continue
        if not sets:
            sets = [ImageFolder(args.data, "train"), ImageFolder(args.data, "test")]
        torch.manual_seed(args.seed)
        try:
            results.append(evaluate(source, args, *sets, device))
        except (WeightsError, FileNotFoundError) as e:
            parser.error(f"{source}: {e}")
        r = results[-1]
        print(f"{r['label']}: kNN " + " ".join(f"{lv} {100 * a:.1f}" for lv, a in r["knn"]["accuracy"].items())
              + ("; linear " + " ".join(f"{lv} {100 * a:.1f}" for lv, a in r["linear"]["accuracy"].items())
                 if "linear" in r else ""))
    views = {}
    for r in results:
        path = out / f"{r['label']}_views.safetensors"
        if path.is_file():
            views[r["label"]] = load_file(str(path))
    if views:
        plot_view_distances(views, out / "view_distances.png")
    plot_summary(results, out / "summary.png")
    (out / "summary.md").write_text(summary_table(results))
    print(summary_table(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
