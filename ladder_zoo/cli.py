"""``ladder-zoo``: list the zoo, inspect a model, extract per-stage features from images.

    ladder-zoo list [PATTERN] [--pretrained]
    ladder-zoo info NAME
    ladder-zoo features NAME IMAGE... [--out FEATS.safetensors] [--random-init | --checkpoint PATH]
    ladder-zoo convert NAME --to detectron2|mmdet OUT [--checkpoint PATH]
    ladder-zoo export-onnx NAME [--tag T | --checkpoint PATH] --out model.onnx [--features-only] [--size H W]
    ladder-zoo import CHECKPOINT --model NAME --out hub/ladder-zoo/NAME.TAG [--weights online|target]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from . import hub, models
from .device import resolve_device
from .errors import UnknownModelError, WeightsError, WeightsNotFoundError, phrased_for
from .factory import create_model, list_models, list_pretrained
from .image_files import IMAGE_SUFFIXES
from .integrations._common import integrations
from .layouts import layout_names
from .weights import WEIGHTS_NAME

EXIT_USAGE = 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ladder-zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="zoo names, their tags and where their weights are")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'ladder_*_r50'")
    p.add_argument("--pretrained", action="store_true", help="only tags whose weights are published")
    p.add_argument("--markdown", action="store_true",
                   help="README's tables: the models, or with --pretrained the released weights")
    p.set_defaults(run=_list)

    p = sub.add_parser("info", help="pretrained cfg, stages (channels / strides) and weights status of a name")
    p.add_argument("name")
    p.set_defaults(run=_info)

    p = sub.add_parser("features", help="per-stage feature maps of images (shapes and pooled norms printed)")
    p.add_argument("name", help="zoo name, with or without tag (e.g. ladder_byol_r18_cifar.cifar10_200ep)")
    p.add_argument("images", nargs="+", type=Path, help="image files, or folders (read recursively)")
    p.add_argument("--out", type=Path, help="save the maps (stage0..stageN, float32 [N,C,H,W]) as safetensors")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--random-init", action="store_true", help="no pretrained weights: shapes only")
    weights.add_argument("--checkpoint", type=Path, help="weights file, Hub-layout folder or SSL checkpoint")
    p.add_argument("--revision", help="Hub branch, tag or commit of the weights")
    p.add_argument("--out-indices", type=int, nargs="+", help="stages to extract (default: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--skip-unreadable", action="store_true", help="skip (and list) images that cannot be decoded")
    p.set_defaults(run=_features)

    p = sub.add_parser("convert", help="write a zoo model's weights for detectron2's or mmdet's ResNet")
    p.add_argument("name", help="zoo name with a published tag, or any zoo name with --checkpoint")
    p.add_argument("--to", choices=["detectron2", "mmdet"], required=True)
    p.add_argument("out", type=Path, help="OUT.pkl (detectron2) or OUT.pth (mmdet)")
    p.add_argument("--checkpoint", help="weights file, Hub-layout folder or SSL checkpoint instead of the tag's")
    p.add_argument("--revision", help="Hub branch, tag or commit of the weights")
    p.set_defaults(run=_convert)

    p = sub.add_parser("export-onnx", help="an ONNX graph of a zoo model (dynamic batch), checked with onnxruntime")
    p.add_argument("name", help="zoo name, with or without tag (e.g. ladder_byol_r50.in1k_200ep)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--tag", help="pretrained tag of NAME (or write NAME.TAG)")
    weights.add_argument("--checkpoint", type=Path, help="weights file, Hub-layout folder or SSL checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--features-only", action="store_true",
                   help="one output per feature level (stem, res2..res5) instead of the pooled features")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input height and width (default: the weights'; ViT and Swin take only theirs)")
    p.set_defaults(run=_export_onnx)
    p = sub.add_parser("import", help="a trainer's checkpoint as a Hub folder that timm and ladder_zoo load",
                       description="Write the backbone of a checkpoint as a Hub folder (config.json, model.safetensors, "
                                   "a card naming the source). Layouts: " + ", ".join(layout_names()) + ".")
    p.add_argument("checkpoint", type=Path, help="lightly / Lightning .ckpt, solo-learn, mmselfsup / mmpretrain .pth, "
                                                 "MoCo, SimSiam, MULAN, DINO, train/'s last.pt, a state dict")
    p.add_argument("--model", required=True, help="the zoo name whose network it is, e.g. byol_r50, simsiam_r18_cifar")
    p.add_argument("--out", type=Path, required=True, help="the folder, ending in NAME.TAG: hub/ladder-zoo/NAME.TAG")
    p.add_argument("--weights", choices=["online", "target"],
                   help="the online backbone or its EMA / momentum target (default: the one the source evaluates)")
    p.add_argument("--license", help="SPDX id of the checkpoint's licence, shown on the card (default: unknown)")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    p.set_defaults(run=_import)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UnknownModelError, WeightsError, ValueError, FileNotFoundError) as e:
        print(f"ladder-zoo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `ladder-zoo info NAME | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _list(args) -> int:
    if args.markdown:
        print(releases_markdown() if args.pretrained else models_markdown(), end="")
        return 0
    if args.pretrained:
        names = list_pretrained(args.pattern)
        for name in names:
            print(name)
        if not names:
            print(f"no published weights{' match ' + repr(args.pattern) if args.pattern not in (None, '*') else ' yet'}; "
                  "`ladder-zoo list` shows every declared tag and the recipe that trains it", file=sys.stderr)
        return 0
    rows, released = [("name", "tag", "weights", "licence", "kNN", "linear", "data")], hub.releases()
    for name in list_models(args.pattern):
        dataset = models.ARCHS[models.MODELS[name].arch].dataset
        for tag in [t for t in models.default_cfgs[name].tags if t] or ["-"]:
            external, release = models.EXTERNAL.get(f"{name}.{tag}"), released.get(hub.repo_id(name, tag))
            if external:
                rows.append((name, tag, external.source, external.license, "-", f"{external.accuracy:.1f}", dataset))
            elif release:
                knn, linear = (_top(release, kind) for kind in ("knn", "linear"))
                rows.append((name, tag, "ladder-zoo", "Apache-2.0", knn, linear, dataset))
            else:
                rows.append((name, tag, "not yet" if tag != "-" else "no tag", "", "", "", ""))
    _print_table(rows)
    print("Top-1 % of the deepest level. ladder-zoo's weights: kNN (k=200, T=0.1) and linear probe on the\n"
          "test split of the data they trained on, measured by this project. Others' weights: the figure\n"
          "their authors report (ImageNet-1k linear evaluation). `ladder-zoo info NAME.TAG`: the source,\n"
          "every level, the recipe.")
    return 0


def _top(release: dict, kind: str) -> str:
    """The deepest level's accuracy (%) of a release's recorded evaluation, or '-'."""
    accuracy = (release.get("evaluation") or {}).get(kind, {}).get("accuracy") or {}
    return f"{100 * list(accuracy.values())[-1]:.1f}" if accuracy else "-"


def _info(args) -> int:
    if ":" not in args.name and args.name.partition(".")[0] not in models.MODELS:
        return _info_timm(args.name)
    model = create_model(args.name, features_only=True)
    cfg = dict(model.pretrained_cfg)
    name, tag = cfg["architecture"], cfg.get("tag")
    arch = models.ARCHS[models.MODELS[name].arch]
    release = hub.releases().get(hub.repo_id(name, tag), {}) if tag else {}
    evaluation = release.get("evaluation") or {}
    print(f"{name}{'.' + tag if tag else ''}")
    print(textwrap.fill(f"method: {cfg.get('description', '')}", 100, subsequent_indent="  "))
    print(f"network: {arch.network}")
    print(f"plain timm architecture: {arch.timm or 'none (no stock timm architecture holds it)'}")
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M (backbone, no head)")
    knn, linear = ((evaluation.get(k) or {}).get("accuracy", {}) for k in ("knn", "linear"))
    if evaluation:
        print(f"evaluation: {arch.dataset} test split, kNN (k={evaluation['knn']['k']}, "
              f"T={evaluation['knn']['temperature']}) and linear probe, top-1 % per level")
    _print_levels(model, {"kNN": knn, "linear": linear} if evaluation else {})
    if integrations(name):
        print("integrations:")
        _print_table(integrations(name), indent=2)
    print("weights: " + ("\n  ".join(_weights_status(name, tag)) if tag else "no pretrained tag declared"))
    if tag and f"{name}.{tag}" not in models.EXTERNAL:
        print(f"recipe: {models.recipe_path(name, tag)}")
    print("pretrained_cfg:")
    print(json.dumps(cfg, indent=2, default=str))
    return 0


def _info_timm(name: str) -> int:
    """A timm name outside the zoo (unknown names: UnknownModelError): its levels and timm's pretrained cfg."""
    try:
        model = create_model(name, features_only=True)
    except UnknownModelError:
        raise
    except RuntimeError as e:  # timm: no features_only form of this model
        raise ValueError(f"{name} is timm's, and timm builds no features_only form of it: {e}") from e
    cfg = dict(model.pretrained_cfg)
    print(f"{name}: timm's model, not one of ladder-zoo's (`ladder-zoo list` shows the zoo)")
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M (backbone, no head)")
    _print_levels(model, {})
    source = f"the Hub repository {cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg.get("url") or "nowhere"
    print(textwrap.fill(f"weights: timm's own, tag {cfg.get('tag') or '-'}, from {source}", 100,
                        subsequent_indent="  "))
    print(f"self-supervised pretraining in a checkout: python -m train.pretrain model={name.partition('.')[0]} ...")
    print("pretrained_cfg:")
    print(json.dumps(cfg, indent=2, default=str))
    return 0


def _print_levels(model: torch.nn.Module, figures: Dict[str, Dict[str, float]]) -> None:
    """The levels of a features_only model (index, name, module, channels, stride), then a column of top-1 % per
    entry of ``figures`` ({column: {level: accuracy}})."""
    info = model.feature_info
    names = models.level_names(info.info)
    rows = [("index", "level", "module", "channels", "stride", *figures)]
    for i, m, c, r in zip(info.out_indices, info.module_name(), info.channels(), info.reduction()):
        cells = [f"{100 * acc[names[i]]:.1f}" if names[i] in acc else "-" for acc in figures.values()]
        rows.append((str(i), names[i], m, str(c), str(r), *cells))
    print("levels (out_indices):")
    _print_table(rows, indent=2)


def _weights_status(name: str, tag: str) -> List[str]:
    """Whether ``name.tag`` is released (by this project, or by others), then where its copies are: one line each."""
    external = models.EXTERNAL.get(f"{name}.{tag}")
    if external:
        cached = hub.url_cache_path(external.url)
        return [f"released by {external.source} under {external.license}, not trained by ladder-zoo", external.url,
                f"published: {external.published}",
                f"reported: {external.accuracy:.1f} % top-1, {external.protocol}", f"sha256: {external.checksum}",
                ("in the torch.hub cache: " if cached.is_file() else "not downloaded yet; its cache: ") + str(cached)]
    repo = hub.repo_id(name, tag)
    where = [str(root / repo) for root in hub.local_hub_roots() if (root / repo).is_dir()]
    release = hub.releases().get(repo)
    if release is not None:
        revision = release.get("revision")
        if revision:  # pushed: the release records the Hub commit
            cached = isinstance(try_to_load_from_cache(repo, WEIGHTS_NAME, revision=revision), str)
            where.insert(0, f"on the Hub @ {revision[:12]}" + (" (in the Hub cache)" if cached else ""))
        return ["released", *(where or ["no copy here (not pushed to the Hub, no local folder)"])]
    return ["not released", "local copies:", *where] if where else ["not released"]


def models_markdown() -> str:
    """README's model tables, from ``models.METHODS`` and ``models.ARCHS``."""
    lines = ["| method | losses (res2, res3, res4, res5) | what |", "|---|---|---|"]
    lines += [f"| `{name}` | {', '.join(m.levels.split())} | {m.description} |" for name, m in models.METHODS.items()]
    lines += ["", "| arch | network | methods | timm architecture | declared tags |", "|---|---|---|---|---|"]
    for name, a in models.ARCHS.items():
        methods = ", ".join(f"`{m}`" for m in a.methods) if a.methods else "all"
        timm_arch = f"`{a.timm}`" + (f" ({', '.join(f'{k}={v}' for k, v in a.timm_args.items())})" if a.timm_args
                                     else "") if a.timm else "none (CIFAR stem)"
        tags = ", ".join(f"`{t}` ({note})" for t, note in a.tags.items()) or "-"
        lines.append(f"| `{name}` | {a.network} | {methods} | {timm_arch} | {tags} |")
    return "\n".join(lines) + "\n"


def releases_markdown() -> str:
    """README's released-weights table: this project's releases (the release record), then others' (``EXTERNAL``)."""
    lines = ["| name | input | weights by | licence | kNN | linear | figures | source |", "|---|---|---|---|---|---|---|---|"]
    released = hub.releases()
    for full in sorted(list_pretrained(), key=lambda full: full in models.EXTERNAL):  # this project's first
        name, tag = full.split(".", 1)
        arch = models.ARCHS[models.MODELS[name].arch]
        size, external = arch.data["input_size"][-1], models.EXTERNAL.get(full)
        if external:
            lines.append(f"| `{full}` | {size} px | {external.source} | {external.license} | - | {external.accuracy:.1f} | "
                         f"{external.protocol} | [file]({external.url}) |")
        else:
            knn, linear = (_top(released[hub.repo_id(name, tag)], kind) for kind in ("knn", "linear"))
            recipe = models.recipe_path(name, tag)
            lines.append(f"| `{full}` | {size} px | ladder-zoo | Apache-2.0 | {knn} | {linear} | {arch.dataset} test "
                         f"split, measured by this project | [{recipe}]({recipe}) |")
    return "\n".join(lines) + "\n"


def _image_paths(inputs: Sequence[Path]) -> List[Path]:
    """The images named: files as given, folders read recursively (their image files, sorted)."""
    paths: List[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{item} is a folder holding no images ({', '.join(IMAGE_SUFFIXES)}, searched "
                                 "recursively): name image files or a folder of them")
            paths += found
        else:
            paths.append(item)
    return paths


def _features(args) -> int:
    import timm.data
    from safetensors.torch import save_file
    from tqdm import tqdm

    device = resolve_device(args.device, "--device")
    args.images = _image_paths(args.images)
    if args.random_init:
        print("WARNING: --random-init: RANDOM weights, no pretrained weights loaded. The features below mean "
              "nothing beyond their shapes.", file=sys.stderr)
        torch.manual_seed(0)  # the same random weights every run
    kwargs = dict(features_only=True, pretrained=not (args.random_init or args.checkpoint), revision=args.revision)
    weights = "random init" if args.random_init else "pretrained"
    if args.checkpoint:
        kwargs["checkpoint_path"] = args.checkpoint
        weights = f"checkpoint {args.checkpoint}"
    if args.out_indices:
        kwargs["out_indices"] = tuple(args.out_indices)
    try:
        if kwargs["pretrained"] and args.name.partition(".")[0] not in models.MODELS:
            _timm_weights_at_hand(args.name)
        model = create_model(args.name, **kwargs)
    except WeightsError as e:
        raise phrased_for(e, "--random-init (shapes only)", "--checkpoint PATH") from e
    model = model.eval().to(device)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)

    all_levels = models.level_names(model.feature_info.info)
    levels = [all_levels[i] for i in model.feature_info.out_indices]
    maps: List[List[torch.Tensor]] = [[] for _ in levels]
    norms: List[torch.Tensor] = []
    done: List[Path] = []
    skipped: List[str] = []
    with tqdm(total=len(args.images), unit="img", desc="features", disable=len(args.images) < 2 * args.batch_size) as bar:
        for start in range(0, len(args.images), args.batch_size):
            batch, paths = [], []
            for path in args.images[start:start + args.batch_size]:
                image = _read_image(path, skip=args.skip_unreadable)
                if image is None:
                    skipped.append(str(path))
                    continue
                batch.append(transform(image))
                paths.append(path)
            if batch:  # the last non-empty batch's input and maps give the shapes printed below
                with torch.inference_mode():
                    feats = model(torch.stack(batch).to(device))
                norms.append(torch.stack([f.float().mean((2, 3)).norm(dim=1).cpu() for f in feats], dim=1))
                if args.out:
                    for store, f in zip(maps, feats):
                        store.append(f.float().cpu())
                done.extend(paths)
            bar.update(len(args.images[start:start + args.batch_size]))
    if not done:
        raise ValueError("no readable image among the inputs")

    norm = torch.cat(norms)
    print(f"{args.name} ({weights}): {len(done)} images, input {tuple(batch[0].shape)}")
    info = model.feature_info
    rows = [("stage", "level", "shape (C, H, W)", "stride", "pooled L2 norm mean", "min", "max")]
    for j, (level, channels, stride) in enumerate(zip(levels, info.channels(), info.reduction())):
        hw = tuple(feats[j].shape[2:])
        rows.append((str(info.out_indices[j]), level, str((channels, *hw)), str(stride),
                     f"{norm[:, j].mean():.4f}", f"{norm[:, j].min():.4f}", f"{norm[:, j].max():.4f}"))
    _print_table(rows)
    if len(done) <= 16:
        print("per image, pooled L2 norm per stage:")
        for path, row in zip(done, norm):
            print(f"  {path}: " + " ".join(f"{v:.4f}" for v in row.tolist()))
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}", file=sys.stderr)
    if args.out:
        tensors = {f"stage{i}": torch.cat(store) for i, store in zip(info.out_indices, maps)}
        meta = {"model": args.name, "weights": weights,
                "levels": json.dumps(levels), "images": json.dumps([str(p) for p in done])}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(args.out), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        args.out.chmod(0o666 & ~umask)  # as any file the user writes (safetensors writes 0600)
        print(f"saved {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())} to {args.out}")
    return 0


def _timm_weights_at_hand(name: str) -> None:
    """timm's own weights of a timm name, where the Hub does not answer (or HF_HUB_OFFLINE is set): cached, or
    WeightsNotFoundError at once instead of huggingface_hub's retries (about 50 s) and its generic error."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg else None
    if not repo or (not hub.is_offline() and hub.hub_reachable()):
        return
    files = {cfg.hf_hub_filename or "pytorch_model.bin", "model.safetensors"}  # timm tries model.safetensors first
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        return
    why = "HF_HUB_OFFLINE is set" if hub.is_offline() else f"the Hub at {hf_constants.ENDPOINT} does not answer"
    raise WeightsNotFoundError(f"timm's weights of {name} ({repo}) are not in the Hugging Face cache and {why}. "
                               f"Download them once online (`hf download {repo}`), or use pretrained=False.")


def _convert(args) -> int:
    if args.to == "detectron2":
        from .integrations.detectron2 import convert
    else:
        from .integrations.mmdet import convert
    try:
        stats = convert(args.name, args.out, checkpoint=args.checkpoint, revision=args.revision)
    except WeightsError as e:
        raise phrased_for(e, "--checkpoint PATH (a run's own weights)", "--checkpoint PATH") from e
    depth = stats["depth"]
    print(f"wrote {args.out} for {args.to}'s ResNet-{depth}. The weights take RGB input, mean {stats['mean']}, "
          f"std {stats['std']} (0-255 pixels).")
    if args.to == "detectron2":
        extra = " MODEL.RESNETS.RES2_OUT_CHANNELS 64" if depth == 18 else ""
        print(f"detectron2 config: MODEL.WEIGHTS {args.out} MODEL.BACKBONE.NAME build_resnet_fpn_backbone "
              f"MODEL.RESNETS.DEPTH {depth} MODEL.RESNETS.STRIDE_IN_1X1 False{extra} INPUT.FORMAT RGB "
              f"MODEL.PIXEL_MEAN \"{stats['mean']}\" MODEL.PIXEL_STD \"{stats['std']}\"")
    else:
        print(f"mmdet config: backbone=dict(type='ResNet', depth={depth}, init_cfg=dict(type='Pretrained', "
              f"checkpoint='{args.out}')), data_preprocessor=dict(mean={stats['mean']}, std={stats['std']}, "
              "bgr_to_rgb=True)")
    return 0


def _export_onnx(args) -> int:
    from importlib.util import find_spec

    from .integrations import onnx

    missing = [m for m in ("onnx", "onnxscript") if find_spec(m) is None]
    if missing:
        print(f"ladder-zoo export-onnx: error: torch's ONNX exporter needs {' and '.join(missing)}: "
              "pip install 'ladder-zoo[onnx]'", file=sys.stderr)
        return EXIT_USAGE
    name = f"{args.name}.{args.tag}" if args.tag else args.name
    if args.size:  # a size the network cannot take is refused before any weights are downloaded
        onnx.input_size(create_model(name, features_only=args.features_only), name, args.size)
    model = create_model(name, pretrained=True, checkpoint_path=args.checkpoint, features_only=args.features_only)
    size = onnx.input_size(model, name, args.size)
    outputs = onnx.export(model, args.out, size)
    print(f"wrote {args.out}: input {onnx.INPUT} [batch, 3, {size[0]}, {size[1]}] (RGB, normalised with mean "
          f"{tuple(model.pretrained_cfg['mean'])}, std {tuple(model.pretrained_cfg['std'])}); outputs {', '.join(outputs)}")
    if find_spec("onnxruntime") is None:
        print("not checked against torch: onnxruntime is not installed (pip install onnxruntime)", file=sys.stderr)
        return 0
    diffs = onnx.verify(model, args.out, size)
    print(f"onnxruntime (CPU) vs torch, batch of {onnx.VERIFY_BATCH}: max abs difference "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return 0


def _import(args) -> int:
    from .publish import import_checkpoint

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    out = import_checkpoint(args.checkpoint, args.model, args.out, args.weights, args.license, dtype)
    imported = json.loads((out / "config.json").read_text())["ladder_zoo"]["imported"]
    print(f"wrote {out}: {args.model}, the {imported['weights']} backbone of {args.checkpoint} ({imported['format']}).")
    print(f"load it: ladder_zoo.create_model('{args.model}', checkpoint_path='{out}')"
          + (f" or timm.create_model('local-dir:{out}')" if models.ARCHS[models.MODELS[args.model].arch].timm else ""))
    return 0


def _read_image(path: Path, skip: bool):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        if skip:
            return None
        raise ValueError(
            f"cannot read image {path}: {e}. Remove it from the inputs, or pass --skip-unreadable to skip and list "
            "such files."
        ) from e


def _print_table(rows, indent: int = 0) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(" " * indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
