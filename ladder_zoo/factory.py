"""``create_model`` and the lists: timm's factory for the zoo, as timm's ``_factory`` sits on its models."""
from __future__ import annotations

import difflib
import fnmatch
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import timm
from torch import nn

from . import hub
from .errors import UnknownModelError
from .models import EXTERNAL, MODELS, default_cfgs
from .weights import config_name


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg: Optional[Union[str, Dict[str, Any]]] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    checkpoint_path: Optional[Union[str, Path]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    revision: Optional[str] = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model`` for the zoo, plus ``revision`` (a Hub branch, tag or commit of the weights).

    Takes every argument timm's does (``features_only``, ``out_indices``, ``output_stride``, ``in_chans``,
    ``num_classes``, ``global_pool``, ``pretrained_cfg_overlay``, ``checkpoint_path``, ``cache_dir``, ...).
    For zoo names, ``checkpoint_path`` (a safetensors file or shard index, a Hub-layout folder, or a torch
    checkpoint, a training checkpoint of ``train/`` included) is loaded like pretrained weights: it works with
    ``features_only``, ``num_classes``, ``in_chans`` and ``output_stride``, which timm's own ``checkpoint_path``
    does not. ``hf-hub:`` repositories that ladder_zoo wrote build the zoo model, others go to timm. Weight
    resolution order: ``ladder_zoo.hub``. Other timm names pass through.
    """
    source, _, ident = model_name.partition(":") if ":" in model_name else (None, "", model_name)
    zoo = False
    if source is None:
        name = ident.partition(".")[0]
        if not timm.is_model(name):
            raise UnknownModelError(_unknown_message(name))
        zoo = name in MODELS
    if zoo and checkpoint_path is not None:
        pretrained_cfg_overlay = {**(pretrained_cfg_overlay or {}), "file": str(checkpoint_path)}
        pretrained, checkpoint_path = True, None
    if revision is not None:
        if source is None and not zoo:
            raise ValueError(f"revision= applies to ladder-zoo models and hf-hub: names, not to timm's {model_name}.")
        kwargs["revision"] = revision
    if source == "hf-hub" and pretrained:
        return _create_from_hf_hub(ident, revision, cache_dir, pretrained_cfg, pretrained_cfg_overlay, kwargs)
    return timm.create_model(
        model_name,
        pretrained=pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        checkpoint_path=checkpoint_path,
        cache_dir=cache_dir,
        **kwargs,
    )


def _create_from_hf_hub(repo, revision, cache_dir, pretrained_cfg, pretrained_cfg_overlay, kwargs) -> nn.Module:
    """An ``hf-hub:`` name. Its config.json comes from the Hub, or (Hub unreachable, offline) from the Hub cache or
    a local Hub folder, else one clear error within seconds, instead of huggingface_hub's ~20 s of retries and
    its raw error. A repository written by ladder_zoo names its zoo model: that model is built with the
    repository's weights (verified when released); any other repository is timm's to build."""
    config_path = hub.hf_hub_file(repo, "config.json", revision, cache_dir)
    name = config_name(json.loads(config_path.read_text()))
    kwargs.pop("revision", None)
    if name not in MODELS:
        return timm.create_model(f"hf-hub:{repo}", pretrained=True, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay, cache_dir=cache_dir, **kwargs)
    weights = hub.hf_hub_weights(repo, revision, cache_dir)
    return create_model(name, checkpoint_path=weights, pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """Zoo names matching ``pattern``; with ``pretrained=True``, the ``name.tag`` names that have weights (released
    here, or released by others: ``models.EXTERNAL``), as ``timm.list_models(pretrained=True)`` lists them."""
    if pretrained:
        return list_pretrained(pattern)
    return sorted(name for name in MODELS if fnmatch.fnmatch(name, pattern))


def list_pretrained(pattern: str = "*", published_only: bool = True) -> List[str]:
    """``name.tag`` names matching ``pattern`` that have weights, or every declared tag (those waiting for their
    run too) with ``published_only=False``. The release record is read now: a tag released since import is in."""
    names, released = [], hub.releases()
    for name in MODELS:
        for tag in default_cfgs[name].tags:
            full = f"{name}.{tag}"
            weights = full in EXTERNAL or hub.repo_id(name, tag) in released
            if tag and (weights or not published_only) and (
                fnmatch.fnmatch(full, pattern) or fnmatch.fnmatch(name, pattern)
            ):
                names.append(full)
    return sorted(names)


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, MODELS, n=5, cutoff=0.5)
    close += [n for n in difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.8) if n not in close]
    hint = f" Close names: {', '.join(close)}." if close else ""
    return f"Unknown model '{name}'.{hint} `ladder-zoo list` shows the zoo; any timm name works too."
