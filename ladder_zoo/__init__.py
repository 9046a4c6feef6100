"""ladder-zoo: self-supervised ResNet backbones (Ladder Siamese Network and baselines), timm-registered.

    >>> import ladder_zoo, torch
    >>> m = ladder_zoo.create_model("ladder_byol_r50", features_only=True)
    >>> [f.shape[1] for f in m(torch.randn(1, 3, 224, 224))]
    [64, 256, 512, 1024, 2048]

Importing the package registers every zoo name with timm, so ``timm.create_model(name)`` works as well.
"""
from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import timm
from torch import nn

__version__ = "0.1.0"

from . import hub, models  # noqa: E402  (models registers the zoo with timm)
from .errors import (  # noqa: E402
    UnknownModelError,
    WeightsError,
    WeightsIntegrityError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .weights import SSLCheckpoint, load_ssl_checkpoint  # noqa: E402

__all__ = [
    "create_model", "list_models", "list_pretrained", "load_ssl_checkpoint", "SSLCheckpoint",
    "UnknownModelError", "WeightsError", "WeightsIntegrityError", "WeightsMismatchError", "WeightsNotFoundError",
    "__version__",
]


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
    For zoo names, ``checkpoint_path`` (a safetensors file or shard index, a Hub-layout folder, a torch
    checkpoint, or a full SSL checkpoint from ``train/``) is loaded like pretrained weights: it works with
    ``features_only``, ``num_classes``, ``in_chans`` and ``output_stride``, which timm's own
    ``checkpoint_path`` does not. Weight resolution order: ``ladder_zoo.hub``. Other timm names pass through.
    """
    source, _, ident = model_name.partition(":") if ":" in model_name else (None, "", model_name)
    zoo = False
    if source is None:
        arch, _, tag = ident.partition(".")
        if not timm.is_model(arch):
            raise UnknownModelError(_unknown_message(arch))
        zoo = arch in models.ARCHITECTURES
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
    """``hf-hub:`` names through timm when the Hub answers; when it does not, from a copy on this machine (the
    Hub cache or a local Hub folder), else one clear error, instead of huggingface_hub's ~20 s of retries and
    its raw error."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if hub.is_offline() or hub.hub_reachable():
        try:
            return timm.create_model(f"hf-hub:{repo}", pretrained=True, pretrained_cfg=pretrained_cfg,
                                     pretrained_cfg_overlay=pretrained_cfg_overlay, cache_dir=cache_dir, **kwargs)
        except LocalEntryNotFoundError as e:  # offline, or the connection dropped: nothing cached
            raise WeightsNotFoundError(f"{hub.unreachable_message(repo, revision)} ({type(e).__name__})") from e
    weights = hub.hf_hub_local_weights(repo, revision, cache_dir)
    config = weights.parent / "config.json" if weights is not None else None
    if config is None or not config.is_file():
        raise WeightsNotFoundError(hub.unreachable_message(repo, revision))
    import json

    arch = json.loads(config.read_text()).get("architecture")
    if arch not in models.ARCHITECTURES:
        raise WeightsNotFoundError(f"{hub.unreachable_message(repo, revision)} (the cached copy is of {arch}, which "
                                   "only timm builds from the Hub)")
    kwargs.pop("revision", None)
    return create_model(arch, checkpoint_path=weights, pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """Zoo architectures matching ``pattern``; with ``pretrained=True``, the ``arch.tag`` names whose weights
    are published (recorded in ``releases.json``), as ``timm.list_models(pretrained=True)`` lists them."""
    if pretrained:
        return list_pretrained(pattern)
    return sorted(a for a in models.ARCHITECTURES if fnmatch.fnmatch(a, pattern))


def list_pretrained(pattern: str = "*", published_only: bool = True) -> List[str]:
    """``arch.tag`` names matching ``pattern``: published ones, or every declared tag with ``published_only=False``."""
    names = []
    for arch in models.ARCHITECTURES:
        for tag in models.default_cfgs[arch].tags:
            name = f"{arch}.{tag}"
            if tag and (not published_only or hub.is_published(hub.repo_id(arch, tag))) and (
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(arch, pattern)
            ):
                names.append(name)
    return sorted(names)


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, models.ARCHITECTURES, n=5, cutoff=0.5)
    close += [n for n in difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.8) if n not in close]
    hint = f" Close names: {', '.join(close)}." if close else ""
    return f"Unknown model '{name}'.{hint} `ladder-zoo list` shows the zoo; any timm name works too."
