"""Writing a Hub-layout folder that ladder_zoo (and timm's ``hf-hub:``) loads, and recording it as a release.

Layout of ``<root>/<org>/<arch>.<tag>/`` (one Hub repository per pretrained tag, as timm's):

- ``config.json``: timm's format (``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg``) plus a
  ``ladder_zoo`` block (method, recipe, training step) that timm ignores;
- ``model.safetensors``, or shards ``model-0000k-of-0000n.safetensors`` with ``model.safetensors.index.json``
  when the weights exceed ``max_shard_size`` (the checkout's ``hub/`` keeps every file under 25 MB);
- ``README.md``: the model card.

``record_release`` returns the sha256 of every file, the entry ``releases.json`` keeps for a published tag.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file

from . import hub
from .weights import INDEX_NAME

HUB_MAX_SHARD_SIZE = "24MB"  # each file of the checkout's hub/ stays under 25 MB, safetensors header included


def write_hub_folder(
    out_dir: Path,
    architecture: str,
    tag: str,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float16,
    card_body: str = "",
    extra: Optional[Dict[str, Any]] = None,
    max_shard_size: str = HUB_MAX_SHARD_SIZE,
) -> Path:
    """Write config.json, the weights (``dtype``, sharded past ``max_shard_size``) and README.md (the default card
    with ``card_body`` appended) into ``out_dir``."""
    from . import __version__, create_model

    from .models import default_cfgs

    out_dir = Path(out_dir)
    declared = tag in default_cfgs[architecture].tags  # a release tag; any other tag is a run's own export
    model = create_model(f"{architecture}.{tag}" if declared else architecture)
    model.load_state_dict(state_dict, strict=True)  # validates the state dict before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)

    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ("file", "hf_hub_id", "source", "url", "state_dict")}
    cfg["tag"] = tag
    config = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": model.num_features,
        "global_pool": "avg",
        "pretrained_cfg": {**cfg, "custom_load": False},
        "ladder_zoo": {"version": __version__, **(extra or {})},
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size)
    for stale in [*out_dir.glob("model*.safetensors"), out_dir / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: tensors[k] for k in keys}, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    (out_dir / "README.md").write_text(default_card(architecture, tag, model.pretrained_cfg, card_body))
    return out_dir


def record_release(folder: Path, revision: Optional[str] = None) -> Dict[str, Any]:
    """The ``releases.json`` entry for a Hub-layout folder: the sha256 of each of its files."""
    files = {p.name: hub.sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}
    return {"files": files, "revision": revision}


def register_release(repo: str, folder: Path, revision: Optional[str] = None) -> Dict[str, Any]:
    """Add (or replace) ``repo``'s entry in the package's releases.json; what ``train.export --register`` does."""
    entry = record_release(folder, revision)
    table = json.loads(hub.RELEASES_FILE.read_text())
    table[repo] = entry
    hub.RELEASES_FILE.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")
    hub.releases.cache_clear()
    return entry


def default_card(architecture: str, tag: str, cfg: Mapping[str, Any], body: str = "") -> str:
    repo = hub.repo_id(architecture, tag)
    papers = cfg.get("paper_ids") or ()
    papers = (papers,) if isinstance(papers, str) else papers
    return f"""---
license: {cfg.get('license', 'apache-2.0')}
library_name: timm
tags:
- image-feature-extraction
- timm
- ladder-zoo
- self-supervised
---
# {architecture}.{tag}

{cfg.get('description', '')}

ResNet backbone without classifier (num_classes=0), input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])},
std {tuple(cfg['std'])}. Produced by `{hub.recipe_path(architecture, tag)}` of ladder-zoo.

```python
import ladder_zoo
model = ladder_zoo.create_model("{architecture}.{tag}", pretrained=True, features_only=True)
# or, after `import ladder_zoo`: timm.create_model("hf-hub:{repo}", pretrained=True)
```

Papers: {', '.join(papers) or '-'}
{body}"""
