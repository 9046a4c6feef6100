"""Reading weight files into backbones: safetensors (single or sharded), Hub-layout folders, torch checkpoints.

Where a file comes from (explicit path, Hub, local Hub folder) is ``hub.py``'s business; this module turns a
local path into a backbone state dict and loads it into a model, with an error naming the problem when the
file is unreadable or does not fit. It knows no zoo name: it reads any checkpoint the way timm's
``load_state_dict`` does.

A torch checkpoint may wrap its state dict (``state_dict`` or ``model``, as timm, torchvision, Lightning and
``train/`` write them; ``state_dict_ema`` / ``model_ema``, timm's EMA copies, with ``target=True``), prefix its
keys with DDP's ``module.`` or torch.compile's ``_orig_mod.``, and hold a whole model whose backbone sits under
``backbone.`` (a Siamese training model; with ``target=True``, its EMA target under ``target_backbone.``).
"""
from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import FeatureDictNet, adapt_input_conv

from .errors import WeightsIntegrityError, WeightsMismatchError, WeightsNotFoundError

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
STATE_KEYS = ("state_dict", "model")  # where checkpoints keep their state dict
EMA_KEYS = ("state_dict_ema", "model_ema")  # timm's EMA copies (target=True)
BACKBONE_PREFIX = "backbone."  # a whole training model's backbone
TARGET_PREFIX = "target_backbone."  # its EMA target (BYOL's momentum network)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers

PathLike = Union[str, Path]


class Weights(NamedTuple):
    state_dict: Dict[str, torch.Tensor]
    trained_as: Optional[str]  # the model name the file records (config.json, a checkpoint's model_name / arch)


def read_state_dict(path: PathLike, target: bool = False) -> Dict[str, torch.Tensor]:
    """A backbone state dict from a local file or Hub-layout folder (``read_weights`` without the name)."""
    return read_weights(path, target).state_dict


def read_weights(path: PathLike, target: bool = False) -> Weights:
    """A backbone state dict, and the model name the file says it was trained as, from a local file or folder.

    Accepts ``model.safetensors``, a sharded ``model.safetensors.index.json``, a folder holding either (its
    ``config.json`` names the model), or a torch checkpoint (see the module docstring). ``target=True`` takes
    the EMA copy instead of the online weights, as timm's ``use_ema``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME if (path / INDEX_NAME).is_file() else path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"Weight file {path} does not exist.")
    if path.name.endswith(".index.json") or path.suffix == ".safetensors":
        state = _read_sharded(path) if path.name.endswith(".index.json") else _read_safetensors(path)
        config = path.parent / "config.json"
        trained_as = config_name(json.loads(config.read_text())) if config.is_file() else None
        return Weights(_select(state, target, path), trained_as)
    raw = torch_load(path)
    trained_as = None
    if isinstance(raw, Mapping):
        trained_as = next((raw[k] for k in ("model_name", "arch") if isinstance(raw.get(k), str)), None)
    return Weights(_select(raw, target, path), trained_as)


def config_name(config: Mapping[str, Any]) -> Optional[str]:
    """The model a Hub folder's config.json names: its ``ladder_zoo.name`` (the zoo name, where ``architecture`` is
    the stock timm one), else its ``architecture``."""
    return (config.get("ladder_zoo") or {}).get("name") or config.get("architecture")


def _select(raw: Any, target: bool, path: Path) -> Dict[str, torch.Tensor]:
    """The backbone's tensors in a loaded checkpoint object: unwrap, strip wrapper prefixes, take the backbone."""
    state, from_ema = raw, False
    if isinstance(raw, Mapping):
        for key in (EMA_KEYS if target else ()) + STATE_KEYS:
            if isinstance(raw.get(key), Mapping):
                state, from_ema = raw[key], key in EMA_KEYS
                break
    if not (isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise WeightsMismatchError(f"{path} holds no state dict of tensors (found {type(raw).__name__}).")
    state = {_strip_wrappers(k): v for k, v in state.items()}
    prefix = TARGET_PREFIX if target and not from_ema else BACKBONE_PREFIX
    backbone = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if backbone:
        return backbone
    if target and not from_ema:
        raise WeightsMismatchError(
            f"{path} holds no EMA target weights (no {' / '.join(EMA_KEYS)}, no '{TARGET_PREFIX}' keys; SimSiam "
            "trains none): load it without target=True."
        )
    return state


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a backbone state dict into a zoo model (or its ``features_only`` wrapper), adapting what timm adapts.

    - input conv: a 3-channel stem is adapted to the model's ``in_chans`` (timm's ``adapt_input_conv``);
    - classifier: a head in the file that the model lacks (``num_classes=0``, ``features_only``) is dropped;
      a head the model has but the file lacks (SSL backbones have none) is left freshly initialised, with a
      warning;
    - modules a ``features_only`` wrapper dropped (the head, stages after the last ``out_indices``) are skipped;
    - anything else that does not fit raises ``WeightsMismatchError`` listing the keys.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first_conv, classifier = cfg.get("first_conv") or "conv1", cfg.get("classifier") or "fc"
    own = model.state_dict()
    sd = dict(state_dict)

    conv_key = f"{first_conv}.weight"
    if conv_key in sd and conv_key in own and sd[conv_key].shape[1] != own[conv_key].shape[1]:
        sd[conv_key] = adapt_input_conv(own[conv_key].shape[1], sd[conv_key].float())

    def is_head(k: str) -> bool:
        return k.startswith(classifier + ".")

    head_in_file = [k for k in sd if is_head(k)]
    if head_in_file and any(k not in own or own[k].shape != sd[k].shape for k in head_in_file):
        _logger.info("%s: dropping classifier %s from %s (the model's head differs).", type(model).__name__, head_in_file, source)
        sd = {k: v for k, v in sd.items() if not is_head(k)}

    # A features_only wrapper (FeatureListNet is a FeatureDictNet) drops the head and the stages after its last
    # out_index: file keys under modules it no longer holds are expected, not errors.
    kept = {name for name, _ in model.named_children()}
    wrapper = isinstance(model, FeatureDictNet)
    unexpected = [k for k in sd if k not in own and (not wrapper or k.split(".")[0] in kept)]
    missing = [k for k in own if k not in sd and not is_head(k) and not k.endswith("num_batches_tracked")]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if unexpected or missing or mismatched:
        arch = cfg.get("architecture", type(model).__name__)
        raise WeightsMismatchError(
            f"Weights from {source} do not fit {arch}: "
            + "; ".join(
                f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if keys
            )
            + ". Is the file a checkpoint of another architecture? Pick the model name it was trained as."
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    fresh_head = [k for k in own if is_head(k) and k not in sd]
    if fresh_head:
        warnings.warn(
            f"{cfg.get('architecture', type(model).__name__)}: the classifier '{classifier}' "
            f"({getattr(model, 'num_classes', '?')} classes) is freshly initialised; the pretrained weights from "
            f"{source} hold the backbone only. Train the head (linear probe or fine-tuning) before using its outputs.",
            stacklevel=2,
        )


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsIntegrityError(
            f"{path} is not a readable safetensors file ({e}). It is truncated or corrupt: delete it and download "
            "or export it again."
        ) from e


def _read_sharded(index_path: Path) -> Dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise WeightsIntegrityError(f"{index_path} is not a safetensors index (no readable 'weight_map'): {e}.") from e
    state: Dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_read_safetensors(index_path.parent / shard))
    if set(state) != set(weight_map):
        raise WeightsIntegrityError(f"The shards next to {index_path} do not hold exactly the tensors its weight_map lists.")
    return state


def torch_load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line error naming a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors for bad files
        raise WeightsIntegrityError(
            f"{path} is not a readable torch checkpoint ({_load_failure(e)}): truncated or corrupt (copy it again), "
            "or not a file of tensors (save a state_dict() with torch.save, or as safetensors)."
        ) from e


def _load_failure(error: Exception) -> str:
    """torch.load's error in one clause, without its advice to load with weights_only=False (wrong for a corrupt
    or foreign file, and unsafe)."""
    text = str(error)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(
        r"WeightsUnpickler error:\s*(.+?)(?:\. |\n|$)", text)
    if found:
        return f"it holds more than tensors and plain containers: {found.group(1)}"
    first = (text.strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
    return key
