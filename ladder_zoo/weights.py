"""Reading weight files into backbones: safetensors (single or sharded), torch checkpoints, SSL checkpoints.

Where a file comes from (explicit path, Hub, local Hub folder) is ``hub.py``'s business; this module turns a
local path into a backbone state dict and loads it into a model, with an error naming the problem when the
file is unreadable or does not fit.

An SSL checkpoint is what ``train/`` writes: a ``torch.save`` dict with ``format == SSL_FORMAT`` holding the
whole Siamese module (online backbone under ``backbone.``, projectors, predictors, EMA target), the optimizer,
scheduler, RNG states and data position. ``load_ssl_checkpoint`` reads it for continued training;
``create_model(name, checkpoint_path=...)`` takes only its online backbone.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import FeatureDictNet, adapt_input_conv

from .errors import WeightsIntegrityError, WeightsMismatchError, WeightsNotFoundError

_logger = logging.getLogger(__name__)

SSL_FORMAT = "ladder-zoo-ssl/1"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
BACKBONE_PREFIX = "backbone."
TARGET_BACKBONE_PREFIX = "target_backbone."
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers

PathLike = Union[str, Path]


@dataclass
class SSLCheckpoint:
    """A full self-supervised training checkpoint, as ``train/`` writes it.

    ``model`` is the state dict of the whole Siamese module; ``backbone_state_dict()`` extracts the online
    (or EMA target) backbone in the key layout of ``create_model(model_name)``.
    """

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
        prefix = TARGET_BACKBONE_PREFIX if target else BACKBONE_PREFIX
        state = {k[len(prefix):]: v for k, v in self.model.items() if k.startswith(prefix)}
        if not state:
            what = "an EMA target backbone (SimSiam has none)" if target else "a backbone"
            raise WeightsMismatchError(f"SSL checkpoint {self.path} holds no {what}: no key starts with '{prefix}'.")
        return state

    def create_backbone(self, target: bool = False, **kwargs):
        """``create_model(self.model_name, **kwargs)`` carrying this checkpoint's backbone weights."""
        from . import create_model

        model = create_model(self.model_name, **kwargs)
        load_backbone(model, self.backbone_state_dict(target), source=f"{self.path} ({'target' if target else 'online'})")
        return model


def load_ssl_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> SSLCheckpoint:
    """Read a full SSL checkpoint written by ``train/`` (backbone, heads, EMA target, optimizer, RNG, data).

    This is the documented way to continue training from a released or intermediate checkpoint;
    ``create_model(name, checkpoint_path=path)`` is the way to get only the backbone.
    """
    path = Path(path)
    return _ssl_checkpoint(path, _torch_load(path, map_location))


def _ssl_checkpoint(path: Path, raw: Any) -> SSLCheckpoint:
    """``raw`` (a loaded file's object) as an ``SSLCheckpoint``, or a one-line error if it is not one."""
    if not (isinstance(raw, dict) and raw.get("format") == SSL_FORMAT):
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise WeightsMismatchError(
            f"{path} is not a ladder-zoo SSL checkpoint (format {found!r}, expected {SSL_FORMAT!r}). "
            "For plain weight files use create_model(name, checkpoint_path=...)."
        )
    known = {"format", "model_name", "config", "step", "epoch", "model", "optimizer", "scheduler", "rng", "data"}
    return SSLCheckpoint(
        path=path,
        model_name=raw["model_name"],
        config=raw["config"],
        step=raw["step"],
        epoch=raw["epoch"],
        model=raw["model"],
        optimizer=raw.get("optimizer"),
        scheduler=raw.get("scheduler"),
        rng=raw.get("rng"),
        data=raw.get("data"),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def read_state_dict(path: PathLike, architecture: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A backbone state dict from a local file or Hub-layout folder.

    Accepts ``model.safetensors``, a sharded ``model.safetensors.index.json``, a folder holding either,
    a ladder-zoo SSL checkpoint (its online backbone is returned) or a plain / timm-style torch checkpoint.
    With ``architecture``, a file that records the zoo name it was trained as (an SSL checkpoint's
    ``model_name``, a Hub folder's ``config.json``) must record that one: the weights of ``ladder_byol_r18_cifar``
    would otherwise load silently as ``simsiam_r18_cifar``, whose state dict has the same keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME if (path / INDEX_NAME).is_file() else path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"Weight file {path} does not exist.")
    if path.name.endswith(".index.json") or path.suffix == ".safetensors":
        config = path.parent / "config.json"
        if architecture and config.is_file():
            _check_trained_as(path.parent, json.loads(config.read_text()).get("architecture"), architecture)
        return _read_sharded(path) if path.name.endswith(".index.json") else _read_safetensors(path)
    raw = _torch_load(path, "cpu")
    if isinstance(raw, dict) and raw.get("format") == SSL_FORMAT:
        if architecture:
            _check_trained_as(path, raw.get("model_name"), architecture)
        return _ssl_checkpoint(path, raw).backbone_state_dict()
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):  # timm / torchvision / Lightning-style wrappers
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not (isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values())):
        raise WeightsMismatchError(f"{path} holds no state dict of tensors (found {type(raw).__name__}).")
    return {_strip_wrappers(k): v for k, v in raw.items()}


def _check_trained_as(path: Path, recorded: Optional[str], architecture: str) -> None:
    from .models import ARCHITECTURES

    if recorded in ARCHITECTURES and architecture in ARCHITECTURES and recorded != architecture:
        raise WeightsMismatchError(
            f"{path} holds weights trained as {recorded}, not {architecture}: load them as "
            f"create_model('{recorded}', checkpoint_path='{path}')."
        )


def load_backbone(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
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


def _torch_load(path: Path, map_location) -> Any:
    if not path.is_file():
        raise WeightsNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors for bad files
        raise WeightsIntegrityError(
            f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e}). It is truncated, corrupt or "
            "pickles objects other than tensors and plain containers; re-save it with state_dict() tensors only."
        ) from e


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
    return key
