"""The zoo: one timm backbone per (pretraining method, architecture), registered with timm.

Every name builds a plain timm model: ``ResNet`` (the ``_cifar`` variants swap in the CIFAR stem: a 3x3 stride-1
``conv1`` and no max-pool), ``VisionTransformer``, ``SwinTransformer`` or ``ConvNeXt`` with the arguments of the
timm architecture it names, so its state dict is that architecture's and loads wherever timm's does. Pretrained
tags are data, in ``default_cfgs``; a tag gets an ``hf_hub_id`` only once its weights are recorded in
``releases.json``, so ``timm.list_pretrained()`` never lists weights that do not exist.

Names: ``{method}_{arch}`` with arch in ``r50`` (ResNet-50), ``r18`` (ResNet-18), ``r18_cifar`` (ResNet-18, CIFAR
stem), for every method in ``METHODS``; and, only for the methods that have a recipe: ``vit_s16``
(vit_small_patch16_224), ``swin_t`` (swin_tiny_patch4_window7_224), ``convnext_t`` (convnext_tiny) and
``vit_t4_cifar`` (vit_tiny_patch16_224's width and depth with 4 px patches on 32 px images).
``features_only`` gives NCHW maps for every family: a ViT's blocks at its four depth quarters (its token grid
without the class token), Swin's and ConvNeXt's four stages.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from . import hub
from .errors import UnknownModelError
from .weights import load_backbone, read_state_dict

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
LEVELS = ("stem", "res2", "res3", "res4", "res5")  # feature_info / out_indices 0..4


def level_names(feature_info: Sequence[Dict[str, Any]]) -> List[str]:
    """Names of a timm model's ``feature_info`` entries: ResNet's stem, res2..res5, or stage0.. otherwise."""
    if [info["module"] for info in feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]:
        return list(LEVELS)
    return [f"stage{i}" for i in range(len(feature_info))]

_LADDER = dict(paper_name="Ladder Siamese Network: a Method and Insights for Multi-level Self-Supervised Learning")
METHODS: Dict[str, Dict[str, Any]] = {
    "byol": dict(
        description="BYOL: global loss on res5.",
        paper_name="Bootstrap your own latent: A new approach to self-supervised Learning",
        paper_ids="arXiv:2006.07733",
    ),
    "ladder_byol": dict(
        description="Ladder-BYOL: global BYOL losses on res2..res5 (G G G G), weights 1/16, 1/8, 1/4, 1.",
        paper_ids=("arXiv:2211.13844", "arXiv:2006.07733"), **_LADDER,
    ),
    "densebyol": dict(
        description="DenseBYOL: dense argmax-aligned BYOL loss averaged with the global loss, on res5 only.",
        paper_ids=("arXiv:2211.13844", "arXiv:2011.09157"), **_LADDER,
    ),
    "ladder_densebyol": dict(
        description="Ladder-DenseBYOL: D D G G on res2..res5; a dense level averages its dense and global loss.",
        paper_ids=("arXiv:2211.13844", "arXiv:2011.09157"), **_LADDER,
    ),
    "simsiam": dict(
        description="SimSiam: stop-gradient Siamese network, no momentum encoder, loss on res5.",
        paper_name="Exploring Simple Siamese Representation Learning",
        paper_ids="arXiv:2011.10566",
    ),
    "ladder_simsiam": dict(
        description="Ladder-SimSiam: SimSiam losses on res2..res5, weights 1/16, 1/8, 1/4, 1.",
        paper_ids=("arXiv:2211.13844", "arXiv:2011.10566"), **_LADDER,
    ),
    "byol_mt": dict(
        description="Multi-task BYOL: 2 global, 2 local and 1 cutout view, one predictor per view type.",
        paper_name="Self-Supervised Learning with a Multi-Task Latent Space Objective (MULAN), De Plaen et al., 2026",
        paper_ids=("arXiv:2602.05845", "arXiv:2006.07733"),
    ),
    "ladder_byol_mt": dict(
        description="Ladder-BYOL multi-task: one predictor per level and per view type (this project's combination).",
        paper_ids=("arXiv:2211.13844", "arXiv:2602.05845", "arXiv:2006.07733"), **_LADDER,
    ),
}

# Architectures: timm model arguments, input and normalisation of the data their weights are trained on, declared
# tags, and (beyond the ResNets) the methods that have a recipe for them.
_IN1K = dict(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_CIFAR = dict(input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0, mean=CIFAR10_MEAN, std=CIFAR10_STD)
_RESNET = dict(first_conv="conv1", classifier="fc")
_VIT = dict(first_conv="patch_embed.proj", classifier="head", fixed_input_size=True)
ARCHS: Dict[str, Dict[str, Any]] = {
    "r50": dict(model_args=dict(block=Bottleneck, layers=(3, 4, 6, 3)), data=_IN1K, tags=("in1k_200ep",)),
    "r18": dict(model_args=dict(block=BasicBlock, layers=(2, 2, 2, 2)), data=_IN1K, tags=()),
    "r18_cifar": dict(model_args=dict(block=BasicBlock, layers=(2, 2, 2, 2)), data=_CIFAR, tags=("cifar10_200ep",)),
    "vit_s16": dict(  # timm vit_small_patch16_224 (MULAN's vit_small: same blocks, qkv bias, LayerNorm eps 1e-6)
        model_args=dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), data=dict(_IN1K, pool_size=None),
        tags=("in1k_200ep",), methods=("byol_mt", "ladder_byol_mt"), timm="vit_small_patch16_224", cfg=_VIT),
    "swin_t": dict(  # timm swin_tiny_patch4_window7_224
        model_args=dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        data=_IN1K, tags=("in1k_200ep",), methods=("ladder_byol",), timm="swin_tiny_patch4_window7_224",
        cfg=dict(first_conv="patch_embed.proj", classifier="head.fc", fixed_input_size=True)),
    "convnext_t": dict(  # timm convnext_tiny
        model_args=dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)), data=_IN1K, tags=("in1k_200ep",),
        methods=("ladder_byol",), timm="convnext_tiny", cfg=dict(first_conv="stem.0", classifier="head.fc")),
    "vit_t4_cifar": dict(  # timm vit_tiny_patch16_224's width and depth, 4 px patches: an 8 x 8 token grid at 32 px
        model_args=dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3),
        data=dict(_CIFAR, pool_size=None), tags=("cifar10_200ep",), methods=("ladder_byol",),
        timm="vit_tiny_patch16_224", cfg=_VIT),
}


class ZooWeights:
    """Reads ladder-zoo weight files: timm's loader calls ``load_pretrained`` (``custom_load``) on the bare model,
    before any ``features_only`` wrapping, with a path that ``hub.resolve_weights`` has already located and
    verified."""

    def load_pretrained(self, checkpoint_path: str) -> None:
        architecture = (getattr(self, "pretrained_cfg", None) or {}).get("architecture")
        load_backbone(self, read_state_dict(checkpoint_path, architecture), source=str(checkpoint_path))


class ZooViT(ZooWeights, VisionTransformer):
    """A timm ``VisionTransformer`` that reads ladder-zoo weight files."""


class ZooSwin(ZooWeights, SwinTransformer):
    """A timm ``SwinTransformer`` that reads ladder-zoo weight files."""


class ZooConvNeXt(ZooWeights, ConvNeXt):
    """A timm ``ConvNeXt`` that reads ladder-zoo weight files."""


def quarter_blocks(depth: int) -> tuple:
    """The blocks that end the four depth quarters of a plain ViT (12 blocks: 2, 5, 8, 11): its feature levels."""
    return tuple(depth * q // 4 - 1 for q in (1, 2, 3, 4))


_FAMILIES = {  # arch -> (model class, timm feature_cfg): NCHW features through forward_intermediates
    "vit_s16": (ZooViT, dict(feature_cls="getter", out_indices=quarter_blocks(12))),
    "vit_t4_cifar": (ZooViT, dict(feature_cls="getter", out_indices=quarter_blocks(12))),
    "swin_t": (ZooSwin, dict(feature_cls="getter", out_indices=(0, 1, 2, 3))),
    "convnext_t": (ZooConvNeXt, dict(out_indices=(0, 1, 2, 3), flatten_sequential=True)),
}


class ZooResNet(ZooWeights, ResNet):
    """A timm ``ResNet`` that reads ladder-zoo weight files."""


class CifarResNet(ZooResNet):
    """ResNet with the CIFAR stem: ``conv1`` is a 3x3 stride-1 conv and there is no max-pool (res5 at stride 8)."""

    def __init__(self, *args, in_chans: int = 3, output_stride: int = 32, **kwargs):
        if output_stride != 32:
            raise ValueError(
                f"output_stride={output_stride}: CIFAR-stem ResNets already keep res5 at stride 8 of a 32 px input; "
                "output_stride (dilation) is for the ImageNet-stem r18 / r50 models."
            )
        super().__init__(*args, in_chans=in_chans, **kwargs)
        factory = dict(device=self.bn1.weight.device, dtype=self.bn1.weight.dtype)
        self.conv1 = nn.Conv2d(in_chans, self.bn1.num_features, 3, stride=1, padding=1, bias=False, **factory)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        self.feature_info[0]["reduction"] = 1
        for info in self.feature_info[1:]:
            info["reduction"] //= 4


def _cfg(method: str, arch: str, tag: str = "") -> Dict[str, Any]:
    repo = hub.repo_id(f"{method}_{arch}", tag) if tag else None
    return dict(
        hf_hub_id=repo if repo and hub.is_published(repo) else None,
        num_classes=0, interpolation="bilinear", license="apache-2.0",
        notes=(f"recipe: {hub.recipe_path(f'{method}_{arch}', tag)}",) if tag else None,
        **ARCHS[arch].get("cfg", _RESNET), **ARCHS[arch]["data"], **METHODS[method],
    )


default_cfgs = generate_default_cfgs({
    f"{method}_{arch}{'.' + tag if tag else ''}": _cfg(method, arch, tag)
    for arch, spec in ARCHS.items()
    for method in spec.get("methods", METHODS)
    for tag in (spec["tags"] or ("",))
})
ARCHITECTURES = tuple(default_cfgs)


def _create(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    arch = next(a for a in sorted(ARCHS, key=len, reverse=True) if variant.endswith("_" + a))
    revision, cache_dir = kwargs.pop("revision", None), kwargs.pop("cache_dir", None)
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)  # a tag, or a dict from an hf-hub: config.json
    if isinstance(pretrained_cfg, str) and pretrained_cfg not in default_cfgs[variant].tags:
        declared = ", ".join(t for t in default_cfgs[variant].tags if t) or "none"
        raise UnknownModelError(f"{variant} has no pretrained tag '{pretrained_cfg}'; its tags: {declared}.")
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, kwargs.pop("pretrained_cfg_overlay", None))
    if kwargs.get("features_only"):
        hint = f"default {_FAMILIES[arch][1]['out_indices']}" if arch in _FAMILIES else "e.g. out_indices=(1, 2, 3, 4) for res2..res5"
        _check_out_indices(variant, kwargs.get("out_indices"), _feature_levels(arch), hint)
    if pretrained:
        path = hub.resolve_weights(
            variant, cfg.tag, file=cfg.file, hf_hub_id=cfg.hf_hub_id, revision=revision, cache_dir=cache_dir
        )
        cfg = dataclasses.replace(cfg, file=str(path), source=None, custom_load=True)
    if arch in _FAMILIES:
        model_cls, feature_cfg = _FAMILIES[arch]
        feature_cfg = dict(feature_cfg, out_indices=kwargs.pop("out_indices", feature_cfg["out_indices"]))
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_cfg=cfg, feature_cfg=feature_cfg,
                                    **{**ARCHS[arch]["model_args"], **kwargs})
    model_cls = CifarResNet if arch.endswith("_cifar") else ZooResNet
    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_cfg=cfg, **ARCHS[arch]["model_args"], **kwargs)


def _feature_levels(arch: str) -> List[str]:
    """The names of an architecture's ``feature_info`` levels (what ``out_indices`` counts), before building it."""
    args = ARCHS[arch]["model_args"]
    if arch not in _FAMILIES:
        return list(LEVELS)
    if "depth" in args:  # plain ViT: every block
        return [f"blocks.{i}" for i in range(args["depth"])]
    stage = "layers" if _FAMILIES[arch][0] is ZooSwin else "stages"
    return [f"{stage}.{i}" for i in range(len(args["depths"]))]


def _check_out_indices(variant: str, out_indices: Optional[Union[int, Sequence[int]]], names: Sequence[str] = LEVELS,
                       hint: str = "e.g. out_indices=(1, 2, 3, 4) for res2..res5") -> None:
    n = len(names)
    if out_indices is None:
        return
    levels = ", ".join(f"{i} {name}" for i, name in enumerate(names))
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices} (the last N levels) must be 1..{n} for {variant} ({levels}).")
        return
    bad = [i for i in out_indices if not isinstance(i, int) or not -n <= i < n]
    if bad or not out_indices:
        raise ValueError(
            f"out_indices={tuple(out_indices)} is out of range for {variant}: its {n} feature levels are {levels}; "
            f"use indices 0..{n - 1} or -{n}..-1 ({hint})."
        )


@register_model
def byol_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, BYOL."""
    return _create("byol_r50", pretrained, **kwargs)


@register_model
def ladder_byol_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, Ladder-BYOL (G G G G)."""
    return _create("ladder_byol_r50", pretrained, **kwargs)


@register_model
def densebyol_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, DenseBYOL (dense + global loss on res5)."""
    return _create("densebyol_r50", pretrained, **kwargs)


@register_model
def ladder_densebyol_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, Ladder-DenseBYOL (D D G G)."""
    return _create("ladder_densebyol_r50", pretrained, **kwargs)


@register_model
def simsiam_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, SimSiam."""
    return _create("simsiam_r50", pretrained, **kwargs)


@register_model
def ladder_simsiam_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, Ladder-SimSiam."""
    return _create("ladder_simsiam_r50", pretrained, **kwargs)


@register_model
def byol_mt_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, multi-task BYOL (one predictor per view type)."""
    return _create("byol_mt_r50", pretrained, **kwargs)


@register_model
def ladder_byol_mt_r50(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-50, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create("ladder_byol_mt_r50", pretrained, **kwargs)


@register_model
def byol_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, BYOL."""
    return _create("byol_r18", pretrained, **kwargs)


@register_model
def ladder_byol_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, Ladder-BYOL (G G G G)."""
    return _create("ladder_byol_r18", pretrained, **kwargs)


@register_model
def densebyol_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, DenseBYOL (dense + global loss on res5)."""
    return _create("densebyol_r18", pretrained, **kwargs)


@register_model
def ladder_densebyol_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, Ladder-DenseBYOL (D D G G)."""
    return _create("ladder_densebyol_r18", pretrained, **kwargs)


@register_model
def simsiam_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, SimSiam."""
    return _create("simsiam_r18", pretrained, **kwargs)


@register_model
def ladder_simsiam_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, Ladder-SimSiam."""
    return _create("ladder_simsiam_r18", pretrained, **kwargs)


@register_model
def byol_mt_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, multi-task BYOL (one predictor per view type)."""
    return _create("byol_mt_r18", pretrained, **kwargs)


@register_model
def ladder_byol_mt_r18(pretrained: bool = False, **kwargs) -> ZooResNet:
    """ResNet-18, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create("ladder_byol_mt_r18", pretrained, **kwargs)


@register_model
def byol_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, BYOL."""
    return _create("byol_r18_cifar", pretrained, **kwargs)


@register_model
def ladder_byol_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, Ladder-BYOL (G G G G)."""
    return _create("ladder_byol_r18_cifar", pretrained, **kwargs)


@register_model
def densebyol_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, DenseBYOL (dense + global loss on res5)."""
    return _create("densebyol_r18_cifar", pretrained, **kwargs)


@register_model
def ladder_densebyol_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, Ladder-DenseBYOL (D D G G)."""
    return _create("ladder_densebyol_r18_cifar", pretrained, **kwargs)


@register_model
def simsiam_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, SimSiam."""
    return _create("simsiam_r18_cifar", pretrained, **kwargs)


@register_model
def ladder_simsiam_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, Ladder-SimSiam."""
    return _create("ladder_simsiam_r18_cifar", pretrained, **kwargs)


@register_model
def byol_mt_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, multi-task BYOL (one predictor per view type)."""
    return _create("byol_mt_r18_cifar", pretrained, **kwargs)


@register_model
def ladder_byol_mt_r18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create("ladder_byol_mt_r18_cifar", pretrained, **kwargs)


@register_model
def byol_mt_vit_s16(pretrained: bool = False, **kwargs) -> ZooViT:
    """ViT-S/16, multi-task BYOL (MULAN's ViT-S run)."""
    return _create("byol_mt_vit_s16", pretrained, **kwargs)


@register_model
def ladder_byol_mt_vit_s16(pretrained: bool = False, **kwargs) -> ZooViT:
    """ViT-S/16, Ladder-BYOL multi-task (blocks 2, 5, 8, 11)."""
    return _create("ladder_byol_mt_vit_s16", pretrained, **kwargs)


@register_model
def ladder_byol_swin_t(pretrained: bool = False, **kwargs) -> ZooSwin:
    """Swin-T, Ladder-BYOL (G G G G on its four stages)."""
    return _create("ladder_byol_swin_t", pretrained, **kwargs)


@register_model
def ladder_byol_convnext_t(pretrained: bool = False, **kwargs) -> ZooConvNeXt:
    """ConvNeXt-T, Ladder-BYOL (G G G G on its four stages)."""
    return _create("ladder_byol_convnext_t", pretrained, **kwargs)


@register_model
def ladder_byol_vit_t4_cifar(pretrained: bool = False, **kwargs) -> ZooViT:
    """ViT-T with 4 px patches on 32 px images, Ladder-BYOL (blocks 2, 5, 8, 11)."""
    return _create("ladder_byol_vit_t4_cifar", pretrained, **kwargs)
