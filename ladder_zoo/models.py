"""The zoo: one timm backbone per (pretraining method, architecture), registered with timm.

Three tables are the whole zoo, and everything else derives from them: the timm entrypoints and pretrained
cfgs below, ``hubconf.py``, README's model tables (``ladder-zoo list --markdown``) and the tests' expectations.

- ``FAMILIES``: how timm builds each kind of network (its class, which reads zoo weight files, and where its
  features are);
- ``ARCHS``: one row per network: family, model arguments, the input its weights are trained on, the stock timm
  architecture it equals (its state dict is that one's, so plain timm loads its Hub repositories), the tags
  declared for it and the methods that have a recipe for it;
- ``METHODS``: one row per pretraining method.

Every name is ``{method}_{arch}``. Pretrained cfgs are static data, as timm's: each declared tag has its Hub
repository id whether or not its weights exist yet; which tags are released is read from the release record
(``hub.releases``) only when weights are resolved or released tags are listed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from . import hub
from .errors import UnknownModelError, WeightsMismatchError
from .weights import load_into, read_weights

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
LEVELS = ("stem", "res2", "res3", "res4", "res5")  # a ResNet's feature_info / out_indices 0..4
RECIPES = "train/configs"  # in the source repository: one recipe per declared tag, <name>_<tag>.yaml


def level_names(feature_info: Sequence[Dict[str, Any]]) -> List[str]:
    """Names of a timm model's ``feature_info`` entries: ResNet's stem, res2..res5, or stage0.. otherwise."""
    if [info["module"] for info in feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]:
        return list(LEVELS)
    return [f"stage{i}" for i in range(len(feature_info))]


def quarter_blocks(depth: int) -> Tuple[int, ...]:
    """The blocks that end the four depth quarters of a plain ViT (12 blocks: 2, 5, 8, 11): its feature levels."""
    return tuple(depth * q // 4 - 1 for q in (1, 2, 3, 4))


def recipe_path(name: str, tag: str) -> str:
    """The ``train/`` recipe that produces the tag ``name.tag``."""
    return f"{RECIPES}/{name}_{tag}.yaml"


# --- the model classes: timm's, reading zoo weight files ----------------------------------------------------------
class ZooWeights:
    """Reads ladder-zoo weight files: timm's loader calls ``load_pretrained`` (``custom_load``) on the bare model,
    before any ``features_only`` wrapping, with a path that ``hub.resolve_weights`` has already located and
    verified. A file that records another zoo name than the model's is refused: the weights of
    ``ladder_byol_r18_cifar`` would otherwise load silently as ``simsiam_r18_cifar``, whose state dict has the
    same keys."""

    def load_pretrained(self, checkpoint_path: str) -> None:
        name = (getattr(self, "pretrained_cfg", None) or {}).get("architecture")
        weights = read_weights(checkpoint_path)
        if weights.trained_as in MODELS and name in MODELS and weights.trained_as != name:
            raise WeightsMismatchError(
                f"{checkpoint_path} holds weights trained as {weights.trained_as}, not {name}: load them as "
                f"create_model('{weights.trained_as}', checkpoint_path='{checkpoint_path}')."
            )
        load_into(self, weights.state_dict, source=str(checkpoint_path))


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


class ZooViT(ZooWeights, VisionTransformer):
    """A timm ``VisionTransformer`` that reads ladder-zoo weight files."""


class ZooSwin(ZooWeights, SwinTransformer):
    """A timm ``SwinTransformer`` that reads ladder-zoo weight files."""


class ZooConvNeXt(ZooWeights, ConvNeXt):
    """A timm ``ConvNeXt`` that reads ladder-zoo weight files."""


# --- the tables ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """How timm builds one kind of network, and its feature levels (what ``out_indices`` counts)."""

    model_cls: type
    cfg: Dict[str, Any]  # pretrained-cfg keys of the family: first_conv, classifier, fixed_input_size
    levels: Callable[[Dict[str, Any]], List[str]]  # model args -> the modules of its feature_info levels
    feature_cfg: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None  # timm feature_cfg; None: timm's


_RESNET_CFG = dict(first_conv="conv1", classifier="fc")
_VIT_CFG = dict(first_conv="patch_embed.proj", classifier="head", fixed_input_size=True)
FAMILIES: Dict[str, Family] = {
    "resnet": Family(ZooResNet, _RESNET_CFG, lambda args: list(LEVELS)),
    "cifar_resnet": Family(CifarResNet, _RESNET_CFG, lambda args: list(LEVELS)),
    "vit": Family(  # features: NCHW token grids (no class token) of the blocks ending the depth quarters
        ZooViT, _VIT_CFG, lambda args: [f"blocks.{i}" for i in range(args["depth"])],
        lambda args: dict(feature_cls="getter", out_indices=quarter_blocks(args["depth"]))),
    "swin": Family(
        ZooSwin, dict(first_conv="patch_embed.proj", classifier="head.fc", fixed_input_size=True),
        lambda args: [f"layers.{i}" for i in range(len(args["depths"]))],
        lambda args: dict(feature_cls="getter", out_indices=tuple(range(len(args["depths"]))))),
    "convnext": Family(
        ZooConvNeXt, dict(first_conv="stem.0", classifier="head.fc"),
        lambda args: [f"stages.{i}" for i in range(len(args["depths"]))],
        lambda args: dict(out_indices=tuple(range(len(args["depths"]))), flatten_sequential=True)),
}


@dataclass(frozen=True)
class Arch:
    """One network of the zoo."""

    family: str
    model_args: Dict[str, Any]  # the family class's arguments
    data: Dict[str, Any]  # the input its weights are trained on: input_size, pool_size, crop_pct, mean, std
    network: str  # what it is, in words (README)
    dataset: str  # the data set its tags train on, and whose test split evaluates them
    tags: Dict[str, str] = field(default_factory=dict)  # declared pretrained tags -> the recipe they follow
    methods: Optional[Tuple[str, ...]] = None  # the methods with a recipe for it; None: every method
    timm: Optional[str] = None  # the stock timm architecture whose network and state dict this is
    timm_args: Dict[str, Any] = field(default_factory=dict)  # the model_args that make ``timm`` this network


@dataclass(frozen=True)
class Method:
    """One pretraining method: what its recipes train (``train/config.py`` reads base, levels and views from here)."""

    levels: str  # losses per ladder level, the paper's notation (G global, D dense, - none)
    description: str
    paper_ids: Union[str, Tuple[str, ...]]
    paper_name: str = "Ladder Siamese Network: a Method and Insights for Multi-level Self-Supervised Learning"
    views: Dict[str, int] = field(default_factory=lambda: {"global": 2})  # views per type (multi-task: local, cutout)
    base: str = "byol"  # the Siamese method at every level: byol (EMA target) | simsiam (stop-gradient)


_IN1K = dict(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_CIFAR = dict(input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0, mean=CIFAR10_MEAN, std=CIFAR10_STD)
_PAPER_IN1K = {"in1k_200ep": "the paper's ImageNet recipe"}
ARCHS: Dict[str, Arch] = {
    "r50": Arch("resnet", dict(block=Bottleneck, layers=(3, 4, 6, 3)), _IN1K, "ResNet-50, 224 px, ImageNet mean/std",
                "ImageNet-1k", _PAPER_IN1K, timm="resnet50"),
    "r18": Arch("resnet", dict(block=BasicBlock, layers=(2, 2, 2, 2)), _IN1K, "ResNet-18, 224 px", "ImageNet-1k",
               timm="resnet18"),
    "r18_cifar": Arch("cifar_resnet", dict(block=BasicBlock, layers=(2, 2, 2, 2)), _CIFAR,
                      "ResNet-18, CIFAR stem (3x3 stride-1 conv1, no max-pool), 32 px, CIFAR-10 mean/std",
                      "CIFAR-10", {"cifar10_200ep": "solo-learn's CIFAR recipe",
                                   "lightly_cifar10_200ep": "lightly's CIFAR-10 benchmark recipe"}),
    "vit_s16": Arch(  # MULAN's vit_small: the same blocks, qkv bias, LayerNorm eps 1e-6
        "vit", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), dict(_IN1K, pool_size=None),
        "timm `vit_small_patch16_224`", "ImageNet-1k", {"in1k_200ep": "MULAN's ViT-S run"}, methods=("byol_mt", "ladder_byol_mt"),
        timm="vit_small_patch16_224"),
    "swin_t": Arch(
        "swin", dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        _IN1K, "timm `swin_tiny_patch4_window7_224`", "ImageNet-1k", {"in1k_200ep": "MoBY's Swin-T recipe"},
        methods=("ladder_byol",), timm="swin_tiny_patch4_window7_224"),
    "convnext_t": Arch(
        "convnext", dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)), _IN1K, "timm `convnext_tiny`", "ImageNet-1k",
        {"in1k_200ep": "MoBY's values, transferred"}, methods=("ladder_byol",), timm="convnext_tiny"),
    "vit_t4_cifar": Arch(  # an 8 x 8 token grid at 32 px
        "vit", dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3), dict(_CIFAR, pool_size=None),
        "`vit_tiny_patch16_224`'s width and depth, 4 px patches, 32 px", "CIFAR-10",
        {"cifar10_200ep": "MULAN's ViT optimiser, transferred"},
        methods=("ladder_byol",), timm="vit_tiny_patch16_224", timm_args=dict(img_size=32, patch_size=4)),
}

_BYOL = "arXiv:2006.07733"
_MULTITASK = {"global": 2, "local": 2, "cutout": 1}  # MULAN main.py: --num-views-per-task 2 2 1
METHODS: Dict[str, Method] = {
    "byol": Method("- - - G", "BYOL: global loss on res5.", _BYOL,
                   "Bootstrap your own latent: A new approach to self-supervised Learning"),
    "ladder_byol": Method("G G G G", "Ladder-BYOL: global BYOL losses on res2..res5 (G G G G), weights 1/16, 1/8, "
                                     "1/4, 1.", ("arXiv:2211.13844", _BYOL)),
    "densebyol": Method("- - - D", "DenseBYOL: dense argmax-aligned BYOL loss averaged with the global loss, on "
                                   "res5 only.", ("arXiv:2211.13844", "arXiv:2011.09157")),
    "ladder_densebyol": Method("D D G G", "Ladder-DenseBYOL: D D G G on res2..res5; a dense level averages its "
                                          "dense and global loss.", ("arXiv:2211.13844", "arXiv:2011.09157")),
    "simsiam": Method("- - - G", "SimSiam: stop-gradient Siamese network, no momentum encoder, loss on res5.",
                      "arXiv:2011.10566", "Exploring Simple Siamese Representation Learning", base="simsiam"),
    "ladder_simsiam": Method("G G G G", "Ladder-SimSiam: SimSiam losses on res2..res5, weights 1/16, 1/8, 1/4, 1.",
                             ("arXiv:2211.13844", "arXiv:2011.10566"), base="simsiam"),
    "byol_mt": Method("- - - G", "Multi-task BYOL: 2 global, 2 local and 1 cutout view, one predictor per view "
                                 "type.", ("arXiv:2602.05845", _BYOL),
                      "Self-Supervised Learning with a Multi-Task Latent Space Objective (MULAN), De Plaen et al., "
                      "2026", _MULTITASK),
    "ladder_byol_mt": Method("G G G G", "Ladder-BYOL multi-task: one predictor per level and per view type (this "
                                        "project's combination).", ("arXiv:2211.13844", "arXiv:2602.05845", _BYOL),
                             views=_MULTITASK),
}


@dataclass(frozen=True)
class Model:
    """A zoo name: a method on an architecture."""

    method: str
    arch: str


MODELS: Dict[str, Model] = {
    f"{method}_{arch}": Model(method, arch)
    for arch, row in ARCHS.items()
    for method in (row.methods or METHODS)
}


def _cfg(name: str, tag: str = "") -> Dict[str, Any]:
    model = MODELS[name]
    arch, method = ARCHS[model.arch], METHODS[model.method]
    return dict(
        hf_hub_id=hub.repo_id(name, tag) if tag else None,
        num_classes=0, interpolation="bilinear", license="apache-2.0",
        notes=(f"recipe: {recipe_path(name, tag)}",) if tag else None,
        description=method.description, paper_name=method.paper_name, paper_ids=method.paper_ids,
        **FAMILIES[arch.family].cfg, **arch.data,
    )


default_cfgs = generate_default_cfgs({
    f"{name}.{tag}" if tag else name: _cfg(name, tag)
    for name, model in MODELS.items()
    for tag in (list(ARCHS[model.arch].tags) or [""])
})


# --- building -----------------------------------------------------------------------------------------------------
def _create(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    arch = ARCHS[MODELS[name].arch]
    family = FAMILIES[arch.family]
    revision, cache_dir = kwargs.pop("revision", None), kwargs.pop("cache_dir", None)
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)  # a tag, or a dict from an hf-hub: config.json
    if isinstance(pretrained_cfg, str) and pretrained_cfg not in default_cfgs[name].tags:
        declared = ", ".join(t for t in default_cfgs[name].tags if t) or "none"
        raise UnknownModelError(f"{name} has no pretrained tag '{pretrained_cfg}'; its tags: {declared}.")
    cfg = resolve_pretrained_cfg(name, pretrained_cfg, kwargs.pop("pretrained_cfg_overlay", None))
    if kwargs.get("features_only"):
        hint = f"default {family.feature_cfg(arch.model_args)['out_indices']}" if family.feature_cfg else None
        check_out_indices(name, kwargs.get("out_indices"), family.levels(arch.model_args), hint)
    if pretrained:
        own_repo = hub.repo_id(name, cfg.tag) if cfg.tag else None
        explicit = cfg.source == "hf-hub" or cfg.hf_hub_id not in (None, own_repo)  # an hf-hub: name or an overlay
        path = hub.resolve_weights(
            name, cfg.tag, file=cfg.file, hf_hub_id=cfg.hf_hub_id if explicit else None, revision=revision,
            cache_dir=cache_dir, recipe=recipe_path(name, cfg.tag) if cfg.tag in arch.tags else None,
        )
        cfg = dataclasses.replace(cfg, file=str(path), source=None, custom_load=True)
    if family.feature_cfg is not None:
        feature_cfg = family.feature_cfg(arch.model_args)
        feature_cfg["out_indices"] = kwargs.pop("out_indices", feature_cfg["out_indices"])
        kwargs["feature_cfg"] = feature_cfg
    return build_model_with_cfg(family.model_cls, name, pretrained, pretrained_cfg=cfg,
                                **{**arch.model_args, **kwargs})


def check_out_indices(name: str, out_indices: Optional[Union[int, Sequence[int]]], names: Sequence[str] = LEVELS,
                      hint: Optional[str] = None) -> None:
    """A one-line ValueError for ``out_indices`` that do not index the model's ``names`` levels."""
    hint = hint or "e.g. out_indices=(1, 2, 3, 4) for res2..res5"
    n = len(names)
    if out_indices is None:
        return
    levels = ", ".join(f"{i} {level}" for i, level in enumerate(names))
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices} (the last N levels) must be 1..{n} for {name} ({levels}).")
        return
    bad = [i for i in out_indices if not isinstance(i, int) or not -n <= i < n]
    if bad or not out_indices:
        raise ValueError(
            f"out_indices={tuple(out_indices)} is out of range for {name}: its {n} feature levels are {levels}; "
            f"use indices 0..{n - 1} or -{n}..-1 ({hint})."
        )


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    model = MODELS[name]

    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{ARCHS[model.arch].network}; {METHODS[model.method].description}"
    return entrypoint


for _name in MODELS:  # one timm entrypoint per name, as timm's @register_model functions
    globals()[_name] = register_model(_entrypoint(_name))
del _name
