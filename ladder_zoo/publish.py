"""Writing a Hub-layout folder that ladder_zoo and timm load, its model card, and recording it as a release.

Layout of ``<root>/<org>/<name>.<tag>/`` (one Hub repository per pretrained tag, as timm's):

- ``config.json``: timm's format. Where the network is a stock timm architecture (``models.ARCHS``' ``timm``),
  ``architecture`` and ``model_args`` name it, so plain timm (``hf-hub:``, ``local-dir:``) and transformers
  (``AutoModel``, its ``TimmWrapperModel``) build and load it without ladder_zoo; otherwise (the CIFAR stem)
  ``architecture`` is the zoo name, which both build after ``import ladder_zoo``. The ``ladder_zoo`` block (the
  zoo name, method, recipe, training step, evaluation) is ladder_zoo's, and timm ignores it.
- ``model.safetensors``, or shards ``model-0000k-of-0000n.safetensors`` with ``model.safetensors.index.json``
  when the weights exceed ``max_shard_size``: timm reads only the single file, so a repository meant for the Hub
  holds one; shards are for the checkout's ``hub/``, which keeps every file under 25 MB for git;
- ``README.md``: the model card, with Hub metadata (``model-index`` once evaluated) that huggingface_hub's
  ``ModelCard`` and ``metadata_load`` read.

``record_release`` gives the release record's entry of a folder (the sha256 of every file, the evaluation);
``import_checkpoint`` writes the folder of any trainer's checkpoint (``ladder-zoo import``).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from huggingface_hub import EvalResult, ModelCardData, split_torch_state_dict_into_shards
from safetensors.torch import save_file

from . import hub
from .factory import create_model
from .models import ARCHS, MODELS, default_cfgs, recipe_path
from .version import __version__
from .weights import INDEX_NAME

HUB_MAX_SHARD_SIZE = "24MB"  # each file of the checkout's hub/ stays under 25 MB, safetensors header included
HUB_DATASETS = {"CIFAR-10": "cifar10", "ImageNet-1k": "imagenet-1k"}  # Hub dataset ids of ARCHS' data sets
EVALUATION = "\n## Evaluation\n"  # the card's evaluation section starts here


def write_hub_folder(
    out_dir: Path,
    name: str,
    tag: str,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float16,
    card_body: str = "",
    extra: Optional[Dict[str, Any]] = None,
    max_shard_size: Optional[str] = HUB_MAX_SHARD_SIZE,
    origin: Optional[str] = None,
    license: Optional[str] = None,
) -> Path:
    """Write config.json, the weights (``dtype``; sharded past ``max_shard_size``, None: one file) and README.md (the
    card: ``origin``, where the weights come from, in place of the recipe or run; ``card_body``; the evaluation in
    ``extra``; the weights' ``license``, default the zoo's) into ``out_dir``."""
    out_dir = Path(out_dir)
    declared = tag in default_cfgs[name].tags  # a release tag; any other tag is a run's own export
    model = create_model(f"{name}.{tag}" if declared else name)
    model.load_state_dict(state_dict, strict=True)  # validates the state dict before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)

    arch = ARCHS[MODELS[name].arch]
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ("file", "hf_hub_id", "source", "url", "state_dict")}
    cfg.update(architecture=arch.timm or name, tag=tag, custom_load=False, **({"license": license} if license else {}))
    for key in ("notes", "origin_url") if origin else ():  # another source's tag: its own facts go in the card
        cfg.pop(key, None)
    config: Dict[str, Any] = {"architecture": arch.timm or name, "num_classes": 0, "num_features": model.num_features}
    if isinstance(getattr(model, "global_pool", None), str):
        config["global_pool"] = model.global_pool
    if arch.timm and arch.timm_args:  # the network's own arguments only: transformers' TimmWrapperModel passes
        config["model_args"] = dict(arch.timm_args)  # num_classes=0 itself, and fails on model_args holding it
    config["dtype"] = "float32"  # what transformers 5 builds the model in (it reads the fp16 files' dtype otherwise)
    config["pretrained_cfg"] = cfg
    config["ladder_zoo"] = {"name": name, "version": __version__, **(extra or {})}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size or 1 << 62)
    for stale in [*out_dir.glob("model*.safetensors"), out_dir / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: tensors[k] for k in keys}, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    card = model_card(name, tag, cfg, card_body, (extra or {}).get("evaluation"), declared, split.is_sharded, origin)
    (out_dir / "README.md").write_text(card)
    return out_dir


def record_release(folder: Path, revision: Optional[str] = None) -> Dict[str, Any]:
    """The release record's entry for a Hub-layout folder: the sha256 of each of its files, the Hub commit, and
    the summary of the evaluation its config.json holds (what ``ladder-zoo list`` / ``info`` and README show)."""
    folder = Path(folder)
    files = {p.name: hub.sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    entry: Dict[str, Any] = {"files": files, "revision": revision}
    config = folder / "config.json"
    evaluation = (json.loads(config.read_text()).get("ladder_zoo") or {}).get("evaluation") if config.is_file() else None
    if evaluation:
        entry["evaluation"] = {k: evaluation[k] for k in ("data", "n_train", "n_test", "knn", "linear") if k in evaluation}
    return entry


def register_release(repo: str, folder: Path, revision: Optional[str] = None) -> Dict[str, Any]:
    """Add (or replace) ``repo``'s entry in the release record; what ``train.export --register`` does."""
    entry = record_release(folder, revision)
    add_releases({repo: entry})
    return entry


def add_releases(entries: Mapping[str, Dict[str, Any]]) -> Path:
    """Add (or replace) these ``{repo: entry}`` in the release record (``hub.releases_file()``), kept sorted."""
    record = hub.releases_file()
    table = json.loads(record.read_text()) if record.is_file() else {}
    table.update(entries)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")
    return record


def import_checkpoint(checkpoint: Path, name: str, out: Path, weights: Optional[str] = None,
                      license: Optional[str] = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the Hub folder ``out`` (``.../NAME.TAG``) of the backbone in any trainer's checkpoint (``layouts.py``):
    the zoo model ``name`` loads it strictly first, so a checkpoint that does not fit writes nothing; the folder is
    written beside ``out`` and moved into place whole. One ``model.safetensors``, as timm and the Hub read it, except
    under this checkout's ``hub/``, whose files stay under 25 MB."""
    from .layouts import backbone
    from .weights import read_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    stem, _, tag = out.name.partition(".")
    if stem != name or not tag or not tag.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--out must end in '{name}.<tag>' (one Hub repository per tag; letters, digits, _ and -), "
                         f"got {out.name}")
    model = create_model(name, checkpoint_path=checkpoint, pretrained_weights=weights)  # converts, checks
    found = backbone(read_checkpoint(checkpoint).data, weights)
    licence = license or "unknown"
    origin = (f"Imported by `ladder-zoo import` from `{checkpoint.name}` ({found.layout}, its {found.weights} "
              f"backbone; sha256 {hub.sha256_file(checkpoint)[:16]}...), not trained by ladder-zoo. Licence of the "
              f"weights: {licence}, as the importer states it.")
    checkout_hub = hub.checkout_hub_dir()
    under_hub = checkout_hub is not None and checkout_hub in out.resolve().parents
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_hub_folder(staging, name, tag, model.state_dict(), dtype=dtype, origin=origin, license=licence.lower(),
                         max_shard_size=HUB_MAX_SHARD_SIZE if under_hub else None,
                         extra={"imported": {"file": checkpoint.name, "format": found.layout, "weights": found.weights,
                                             "license": licence}})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# --- the model card -------------------------------------------------------------------------------------------------
def model_card(name: str, tag: str, cfg: Mapping[str, Any], body: str = "", evaluation: Optional[dict] = None,
               declared: bool = True, sharded: bool = False, origin: Optional[str] = None) -> str:
    """README.md of ``name.tag``: Hub metadata, what it is, usage lines that run for this very tag (a declared tag
    by its name, a run's own export or an import by its folder), ``body`` (the training), and the evaluation."""
    arch = ARCHS[MODELS[name].arch]
    repo = hub.repo_id(name, tag)
    if declared:
        load = f'ladder_zoo.create_model("{name}.{tag}", pretrained=True, features_only=True)'
        plain = f'timm.create_model("hf-hub:{repo}", pretrained=True)'
        origin = f"Produced by `{recipe_path(name, tag)}` of ladder-zoo."
    else:
        load = f'ladder_zoo.create_model("{name}", checkpoint_path="path/to/{name}.{tag}", features_only=True)'
        plain = f'timm.create_model("local-dir:path/to/{name}.{tag}", pretrained=True)'
        origin = origin or f"A run's own export under the tag `{tag}` (not a release of ladder-zoo): its training is below."
    if arch.timm and not sharded:
        timm_line = f"# or with timm alone (no ladder_zoo): {plain}  # timm's {arch.timm}"
    elif arch.timm:
        timm_line = "# sharded weights: timm alone reads a single model.safetensors; load them with ladder_zoo"
    else:
        timm_line = "# no stock timm architecture holds this network (the CIFAR stem): load it with ladder_zoo"
    papers = cfg.get("paper_ids") or ()
    papers = (papers,) if isinstance(papers, str) else papers
    text = f"""# {name}.{tag}

{cfg.get('description', '')}

{arch.network}, without classifier (num_classes=0); input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])},
std {tuple(cfg['std'])}. {origin}

```python
import ladder_zoo
model = {load}
{timm_line}
```

Papers: {', '.join(papers) or '-'}
{body}"""
    return _front_matter(name, tag, cfg, evaluation) + text + (evaluation_section(name, evaluation) if evaluation else "")


def with_evaluation(card: str, name: str, tag: str, cfg: Mapping[str, Any], evaluation: dict) -> str:
    """``card`` with its metadata and evaluation section replaced by those of ``evaluation``."""
    text = card.split("\n---\n", 1)[1] if card.startswith("---\n") else card
    text = text.split(EVALUATION)[0].rstrip("\n") + "\n"
    return _front_matter(name, tag, cfg, evaluation) + text + evaluation_section(name, evaluation)


def evaluation_section(name: str, evaluation: dict) -> str:
    """The card's per-level table of kNN and linear-probe accuracy (train.eval's JSON)."""
    dataset = ARCHS[MODELS[name].arch].dataset
    rows = []
    if "knn" in evaluation:
        knn = evaluation["knn"]
        rows.append((f"kNN (k={knn.get('k', '?')}, T={knn.get('temperature', '?')})", knn["accuracy"]))
    if "linear" in evaluation:
        rows.append((f"linear probe ({evaluation['linear'].get('epochs', '?')} epochs)", evaluation["linear"]["accuracy"]))
    levels = list(dict.fromkeys(level for _, accuracy in rows for level in accuracy))
    lines = [f"| {dataset} test, top-1 % | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    lines += [f"| {label} | " + " | ".join(f"{100 * acc[lv]:.1f}" if lv in acc else "-" for lv in levels) + " |"
              for label, acc in rows]
    command = f"\nMeasured by `{evaluation['command']}`.\n" if evaluation.get("command") else ""
    return EVALUATION + "\n" + "\n".join(lines) + "\n" + command


def _front_matter(name: str, tag: str, cfg: Mapping[str, Any], evaluation: Optional[dict]) -> str:
    """The card's YAML metadata, as huggingface_hub writes and reads it (``ModelCardData``, ``EvalResult``)."""
    dataset = ARCHS[MODELS[name].arch].dataset
    knn = (evaluation or {}).get("knn") or {}
    results = []
    for kind, label in (("knn", f"kNN top-1 (k={knn.get('k', '?')}, T={knn.get('temperature', '?')})"),
                        ("linear", "linear-probe top-1")):
        for level, accuracy in ((evaluation or {}).get(kind) or {}).get("accuracy", {}).items():
            results.append(EvalResult(
                task_type="image-classification", dataset_type=HUB_DATASETS[dataset], dataset_name=dataset,
                dataset_split="test", metric_type="accuracy", metric_value=round(100 * accuracy, 2),
                metric_name=f"{label}, {level}"))
    data = ModelCardData(
        license=cfg.get("license", "apache-2.0"), library_name="timm", pipeline_tag="image-feature-extraction",
        tags=["image-feature-extraction", "timm", "ladder-zoo", "self-supervised", MODELS[name].method],
        datasets=[HUB_DATASETS[dataset]], model_name=f"{name}.{tag}" if results else None,
        eval_results=results or None,
    )
    return f"---\n{data.to_yaml()}\n---\n"
