"""Where trainers keep the backbone in their checkpoints, and the filter fn that turns it into the zoo's timm keys.

timm's loader (``timm.models.load_pretrained``) takes a checkpoint, calls the model's filter fn on it, adapts the input
conv and the head, and loads strictly. ``checkpoint_filter_fn`` is the zoo's filter fn for every source: the zoo's
own Hub repositories, the weights others released (``models.EXTERNAL``) and any checkpoint given by path. It

1. takes the state dict out of its container (``CONTAINERS``) and strips DDP's ``module.`` and torch.compile's
   ``_orig_mod.``;
2. finds the trainer's layout (``LAYOUTS``: where it keeps the online backbone and its EMA / momentum target) and
   takes the backbone asked for (``weights="online"`` or ``"target"``), by default the one the source evaluates;
3. renames the keys of a backbone kept as an ``nn.Sequential`` of a ResNet's children (lightly's examples);
4. checks that the tensors are exactly the model's backbone: each one used, none missing, shapes equal (the input
   conv may differ in channels, which timm adapts). Anything else is one ``WeightsMismatchError`` line that names the
   layout found, the keys that do not fit and what to pass.

Each row was read from its trainer's source at the commit its comment names: pfdp0/mulan 6f38ec9ba377474b9a2c0c669c1
bb207c2845783, open-mmlab/mmselfsup db861f30487c9a0b0cb3e35e176d6058887660bc, mmpretrain 1.2.0 (PyPI),
vturrisi/solo-learn 9187ea39c2c3f43c455ab06664d2b019a9802954, lightly-ai/lightly e8d317fc5a87f4387a85a35e689869039ec249ee,
lightly-ai/lightly-train 8f5a75c4107743fc9fdbd77e6fbc45664a014fd0, facebookresearch/moco
a419ef282fc9885015674e77f58c59447206a27f, facebookresearch/simsiam a7bc1772896d0dad0806c51f0bb6f3b16d290468,
facebookresearch/dino 7c446df5b9f45747937fb0d72314eb9f7b66930a.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .errors import WeightsMismatchError

_logger = logging.getLogger(__name__)

WEIGHTS = ("online", "target")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


@dataclass(frozen=True)
class Container:
    """A checkpoint dict's keys that hold the online and the target state dict."""

    name: str
    online: str
    target: str
    default: str = "online"  # the one the source evaluates


CONTAINERS = (
    # MULAN main.py @6f38ec9 (checkpoint.pth); eval_linear.py's --lin-model-choice defaults to online_model
    Container("MULAN checkpoint", "online_model", "target_model"),
    # DINO main_dino.py @7c446df (checkpoint.pth); its evaluations take checkpoint_key "teacher"
    Container("DINO checkpoint", "student", "teacher", default="target"),
    # timm train.py (an EMA copy beside the model); Lightning, mmengine, the official MoCo and SimSiam: state_dict
    Container("checkpoint", "state_dict", "state_dict_ema"),
    # timm, DeiT, this project's train/ (SSL_FORMAT)
    Container("checkpoint", "model", "model_ema"),
)


@dataclass(frozen=True)
class Layout:
    """Where one trainer keeps its backbones in a state dict."""

    name: str  # the trainer, as model cards and errors name it
    online: str  # key prefix of the online backbone
    target: Optional[str] = None  # key prefix of its EMA / momentum target; None: the method trains none
    marks: Tuple[str, ...] = ()  # key prefixes of the trainer's other modules, one of which tells it apart
    heads: Tuple[str, ...] = ()  # modules under the backbone prefix that are heads, not backbone (a projector in fc)
    default: str = "online"  # the backbone the source evaluates


LAYOUTS = (
    # this project: train/checkpoint.py SSLCheckpoint.model (backbone, target_backbone, projectors, predictors)
    Layout("ladder-zoo training checkpoint", "backbone.", "target_backbone.", ("target_backbone.", "projectors.")),
    # mmselfsup 1.x @db861f3 mmselfsup/models/algorithms/byol.py, mmpretrain 1.2.0 models/selfsup/byol.py:
    # target_net = CosineEMA(nn.Sequential(backbone, neck)), mmengine's EMA keeps it as .module
    Layout("mmselfsup / mmpretrain", "backbone.", "target_net.module.0.", ("neck.", "target_net.")),
    # solo-learn @9187ea3 solo/methods/base.py: backbone, classifier (online linear probe), momentum_backbone
    Layout("solo-learn", "backbone.", "momentum_backbone.", ("momentum_backbone.", "projector.", "classifier.")),
    # lightly @e8d317f examples/pytorch_lightning/byol.py, simsiam.py: backbone (often an nn.Sequential of a
    # torchvision ResNet's children), backbone_momentum, projection_head, prediction_head
    Layout("lightly", "backbone.", "backbone_momentum.", ("backbone_momentum.", "projection_head.")),
    # lightly @e8d317f benchmarks/imagenet/resnet50/byol.py: teacher_backbone, online_classifier
    Layout("lightly benchmarks", "backbone.", "teacher_backbone.", ("teacher_backbone.", "online_classifier.")),
    # MoCo v1 / v2 @a419ef2 moco/builder.py: encoder_q / encoder_k, the MLP head in their fc (main_lincls.py drops it)
    Layout("MoCo v1/v2 (official)", "encoder_q.", "encoder_k.", heads=("fc.",)),
    # SimSiam @a7bc177 simsiam/builder.py: encoder (its fc is the projector), predictor; main_lincls.py drops fc
    Layout("SimSiam (official)", "encoder.", None, ("predictor.",), heads=("fc.",)),
    # a model whose backbone is its backbone part: MULAN's and DINO's networks (backbone, projector / head)
    Layout("a model with a backbone", "backbone.", None),
    # a backbone alone: timm, torchvision, lightly-train's exported_last.pt, MULAN's and DINO's released files
    Layout("a bare backbone", "", None),
)


class Backbone(NamedTuple):
    state: Dict[str, torch.Tensor]  # keyed as the trainer keys the backbone, its prefix stripped
    layout: str  # what was found, in words: "MULAN checkpoint, a model with a backbone"
    weights: str  # "online" or "target"


def backbone(checkpoint: Mapping[str, Any], weights: Optional[str] = None) -> Backbone:
    """The backbone tensors of a checkpoint of any known layout: ``weights`` "online" or "target" (its EMA /
    momentum copy), default the one the source evaluates."""
    if weights not in (None, *WEIGHTS):
        raise ValueError(f"weights={weights!r}: pass 'online' or 'target' (or nothing: the one the source evaluates)")
    state, container = _unwrap(checkpoint, weights)
    state = {_strip_wrappers(k): v for k, v in state.items()}
    layout = next(row for row in LAYOUTS if _fits(row, state))
    found = ", ".join(x for x in (container.name if container else "", layout.name) if x)
    if container is not None:  # the container chose the network; inside it, the online prefix holds the backbone
        which, prefix = weights or container.default, layout.online
    else:
        which = weights or layout.default
        prefix = layout.online if which == "online" else layout.target
        if prefix is None or not any(k.startswith(prefix) for k in state):
            why = f"no '{prefix}' keys" if prefix else "its method trains no EMA target"
            raise WeightsMismatchError(f"{found}: holds no {which} backbone ({why}); pass weights='online'.")
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    part = {k: v for k, v in part.items() if not k.startswith(layout.heads)} if layout.heads else part
    return Backbone(part, found, which)


def _unwrap(checkpoint: Mapping[str, Any], weights: Optional[str]):
    """The state dict in a checkpoint dict, and the container that chose it between an online and a target network
    (None: the dict is the state dict, or holds one network, whose layout then chooses)."""
    if _is_state(checkpoint):
        return checkpoint, None
    for container in CONTAINERS:
        online, target = checkpoint.get(container.online), checkpoint.get(container.target)
        if _is_state(online) and _is_state(target):
            return (online if (weights or container.default) == "online" else target), container
        if _is_state(online):
            return online, None
    states = [k for k, v in checkpoint.items() if _is_state(v)]
    if len(states) == 1:  # one state dict under a key of the user's own ({"resnet18_parameters": ...}, lightly's tutorial)
        return checkpoint[states[0]], None
    keys = ", ".join(map(str, list(checkpoint)[:8]))
    raise WeightsMismatchError(
        f"unknown layout: a dict of {len(checkpoint)} entries ({keys}) without one state dict of tensors under a known "
        f"key ({', '.join(sorted({c.online for c in CONTAINERS}))}). Save the backbone's state dict itself.")


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _fits(layout: Layout, state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(layout.online) for k in state) and (
        not layout.marks or any(k.startswith(layout.marks) for k in state))


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
    return key


def checkpoint_filter_fn(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    weights: Optional[str] = None,
    source: str = "checkpoint",
    fits: Optional[Callable[[Mapping[str, torch.Tensor]], str]] = None,
) -> Dict[str, torch.Tensor]:
    """timm's filter fn for the zoo: ``checkpoint`` (any known layout) -> the state dict of ``model``'s backbone.

    A head in the file that the model cannot take is dropped; a head the model has and the file lacks (an SSL
    backbone has none) is kept as initialised, with a warning. ``fits(state)`` names the networks a backbone that
    does not fit does fit (the error's hint).
    """
    try:
        found = backbone(checkpoint, weights)
    except WeightsMismatchError as e:
        raise WeightsMismatchError(f"{source}: {e}") from None
    state = _children_keys(found.state, model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first_conv, classifier = f"{cfg.get('first_conv') or 'conv1'}.weight", f"{cfg.get('classifier') or 'fc'}."
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(classifier) and (k not in own or own[k].shape != v.shape))}
    missing = [k for k in own if k not in state and not k.startswith(classifier) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape and not _other_channels(k == first_conv, v, own[k])]
    if missing or unexpected or mismatched:
        listed = "; ".join(f"{label} ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("shape mismatch", mismatched)) if keys)
        hint = fits({k: v for k, v in state.items() if not k.startswith(classifier)}) if fits else ""
        raise WeightsMismatchError(
            f"{source} ({found.layout}, {found.weights} backbone) does not fit {cfg.get('architecture', type(model).__name__)}: "
            f"{listed}.{' ' + hint if hint else ''}")
    fresh = [k for k in own if k.startswith(classifier) and k not in state]
    if fresh:
        warnings.warn(
            f"{cfg.get('architecture', type(model).__name__)}: the classifier '{classifier[:-1]}' "
            f"({getattr(model, 'num_classes', '?')} classes) is freshly initialised; the pretrained weights from "
            f"{source} hold the backbone only. Train the head (linear probe or fine-tuning) before using its outputs.",
            stacklevel=2)
        state.update({k: own[k] for k in fresh})
    _logger.info("%s: %s, %s backbone, %d tensors", source, found.layout, found.weights, len(state))
    return state


def _children_keys(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Keys of an ``nn.Sequential`` of a network's children (``4.0.conv1.weight``: lightly's examples build the
    backbone as ``nn.Sequential(*list(resnet.children())[:-1])``) renamed to the model's children
    (``layer1.0.conv1.weight``): torchvision's and timm's ResNets list their children in the same order."""
    if not state or not all(k.split(".", 1)[0].isdigit() for k in state):
        return state
    children = [name for name, _ in model.named_children()]
    index = lambda k: int(k.split(".", 1)[0])
    if max(map(index, state)) >= len(children):
        return state
    return {f"{children[index(k)]}.{k.split('.', 1)[1]}": v for k, v in state.items()}


def _other_channels(is_first_conv: bool, weight: torch.Tensor, own: torch.Tensor) -> bool:
    """The input conv of a model built with another ``in_chans``: the same but for dim 1 (timm adapts it)."""
    return is_first_conv and weight.ndim == own.ndim == 4 and weight.shape[0] == own.shape[0] \
        and weight.shape[2:] == own.shape[2:]


def layout_names() -> List[str]:
    """Every known layout, in words (``ladder-zoo import --help``, docs)."""
    return [row.name for row in LAYOUTS]
