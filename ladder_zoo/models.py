"""The zoo: one timm backbone per (pretraining method, architecture), registered with timm.

Four tables are the whole zoo, and everything else derives from them: the timm entrypoints and pretrained
cfgs below, ``hubconf.py``, README's model and weights tables (``ladder-zoo list --markdown``) and the tests'
expectations.

- ``FAMILIES``: how timm builds each kind of network (its class, which reads zoo weight files, and where its
  features are);
- ``ARCHS``: one row per network: family, model arguments, the input its weights are trained on, the stock timm
  architecture it equals (its state dict is that one's, so plain timm loads its Hub repositories), the tags
  declared for it and the methods that have a recipe for it;
- ``METHODS``: one row per pretraining method;
- ``EXTERNAL``: the weights that others released for zoo names (a URL, its licence, where it is published, the
  authors' figure), served as timm serves weights outside the Hub: ``url`` in the pretrained cfg and a filter fn
  (``layouts.checkpoint_filter_fn``) that converts the source's layout on load.

Every name is ``{method}_{arch}``. Pretrained cfgs are static data, as timm's, and as in timm a cfg with a weight
source means the weights exist (``timm.list_models(pretrained=True)`` lists it): a declared tag has its Hub repository
id only once it is released. timm builds its registry at import, so the release record (``hub.releases``) is read
then for it; ``create_model`` and ``list_pretrained`` read the record again each time. A declared tag that waits for
its run keeps its cfg (and its recipe in ``notes``), with no weight source: ``pretrained=True`` on it raises
``WeightsNotFoundError`` naming the recipe.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (build_model_with_cfg, generate_default_cfgs, load_pretrained, register_model,
                         resolve_pretrained_cfg)
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from . import hub
from .errors import UnknownModelError, WeightsMismatchError
from .layouts import checkpoint_filter_fn
from .weights import read_checkpoint

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
    """Reads any weight file into the model: timm's loader calls ``load_pretrained`` (``custom_load``, timm's hook for
    formats it does not read) on the bare model, before any ``features_only`` wrapping, with the local file that
    ``hub.resolve_weights`` located and verified. It reads the file as data (``weights.read_checkpoint``) and hands
    it to timm's own ``load_pretrained`` with the zoo's filter fn, which takes the backbone out of the source's
    layout; timm then adapts the input conv and the head, and loads strictly.

    ``pretrained_weights`` ("online" / "target", a constructor argument that ``create_model`` passes on) picks the
    backbone of a checkpoint that holds both; by default the one its source evaluates. A file that records another
    zoo name than the model's is refused: the weights of ``ladder_byol_r18_cifar`` would otherwise load silently as
    ``simsiam_r18_cifar``, whose state dict has the same keys."""

    def __init__(self, *args, pretrained_weights: Optional[str] = None, **kwargs):
        self.pretrained_weights = pretrained_weights
        super().__init__(*args, **kwargs)

    def load_pretrained(self, checkpoint_path: str) -> None:
        cfg = self.pretrained_cfg
        name = cfg.get("architecture")
        checkpoint = read_checkpoint(checkpoint_path)
        if checkpoint.trained_as in MODELS and name in MODELS and checkpoint.trained_as != name:
            raise WeightsMismatchError(
                f"{checkpoint_path} holds weights trained as {checkpoint.trained_as}, not {name}: load them as "
                f"create_model('{checkpoint.trained_as}', checkpoint_path='{checkpoint_path}')."
            )
        # the filter fn decides the head (a head in the file loads where it fits): timm keeps what it returns
        in_memory = {**cfg, "state_dict": checkpoint.data, "file": None, "url": None, "hf_hub_id": None, "source": None,
                     "num_classes": self.num_classes}
        filter_fn = functools.partial(checkpoint_filter_fn, weights=self.pretrained_weights, source=str(checkpoint_path),
                                      fits=fitting_archs)
        load_pretrained(self, in_memory, num_classes=self.num_classes,
                        in_chans=self.get_submodule(cfg["first_conv"]).in_channels, filter_fn=filter_fn)


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
    "vit_b16": Arch(  # MULAN's vit_base, the same as its vit_small but for width
        "vit", dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), dict(_IN1K, pool_size=None),
        "timm `vit_base_patch16_224`", "ImageNet-1k", methods=("byol_mt",), timm="vit_base_patch16_224"),
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
METHODS: Dict[str, Method] = {  # descriptions in words; the levels, views and base are the fields, not restated
    "byol": Method("- - - G", "BYOL: the online network predicts the projection of an EMA target network.", _BYOL,
                   "Bootstrap your own latent: A new approach to self-supervised Learning"),
    "ladder_byol": Method("G G G G", "Ladder-BYOL: BYOL's loss at every level of the ladder, deeper levels weighed "
                                     "more (Eq. 6).", ("arXiv:2211.13844", _BYOL)),
    "densebyol": Method("- - - D", "DenseBYOL: BYOL's global loss averaged with a dense, argmax-aligned one.",
                        ("arXiv:2211.13844", "arXiv:2011.09157")),
    "ladder_densebyol": Method("D D G G", "Ladder-DenseBYOL: dense levels average a dense and a global BYOL loss, "
                                          "global levels take BYOL's.", ("arXiv:2211.13844", "arXiv:2011.09157")),
    "simsiam": Method("- - - G", "SimSiam: a Siamese network with a stop-gradient target, no momentum encoder.",
                      "arXiv:2011.10566", "Exploring Simple Siamese Representation Learning", base="simsiam"),
    "ladder_simsiam": Method("G G G G", "Ladder-SimSiam: SimSiam's loss at every level of the ladder, deeper levels "
                                        "weighed more (Eq. 6).", ("arXiv:2211.13844", "arXiv:2011.10566"),
                             base="simsiam"),
    "byol_mt": Method("- - - G", "Multi-task BYOL (MULAN): global, local and cutout views, one predictor per view "
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


@dataclass(frozen=True)
class External:
    """Weights that others released for a zoo name, each fact read from where they are published."""

    url: str
    license: str  # SPDX id of the weights' licence
    source: str  # who released them
    published: str  # where the URL and the figure are published: repository @ commit, file, release
    accuracy: float  # the authors' figure, never this project's measurement: top-1 % of ...
    protocol: str  # ... this evaluation, as its authors ran it
    checksum: str  # the sha256 the source publishes, or that it publishes none


_MULAN = dict(
    license="MIT", source="MULAN",
    published="github.com/pfdp0/mulan @ 6f38ec9ba377474b9a2c0c669c1bb207c2845783 (README.md, Pretrained Models: "
              "release v2.0; LICENSE: MIT)",
    protocol="ImageNet-1k linear evaluation, by MULAN's authors (README)",
    checksum="none published (MULAN's README links the files only)",
)
_MULAN_URL = "https://github.com/pfdp0/mulan/releases/download/v2.0/"


def _mmselfsup(method: str, accuracy: float, file: str) -> External:
    """A mmselfsup 1.x release: its metafile's Weights URL, whose file name ends in the sha256 prefix."""
    return External(
        f"https://download.openmmlab.com/mmselfsup/1.x/{method}/{file[:file.rindex('_')]}/{file}", "Apache-2.0",
        "OpenMMLab",
        f"github.com/open-mmlab/mmselfsup 1.x @ db861f30487c9a0b0cb3e35e176d6058887660bc "
        f"(configs/selfsup/{method}/metafile.yml; LICENSE: Apache-2.0)",
        accuracy, "ImageNet-1k linear evaluation (90 epochs, resnet50_linear-8xb512-coslr-90e_in1k), by OpenMMLab "
        "(metafile.yml)", f"sha256 prefix {file[file.rindex('-') + 1:-4]} in the file name (torch.hub's check_hash)")


EXTERNAL: Dict[str, External] = {  # name.tag -> External; a name's tags in this order (timm's first is its default)
    "byol_mt_r50.mulan_in1k_800ep": External(_MULAN_URL + "byol_multitask_resnet50_800ep_ckpt.pth", accuracy=76.7, **_MULAN),
    "byol_mt_r50.mulan_in1k_200ep": External(_MULAN_URL + "byol_multitask_resnet50_200ep_ckpt.pth", accuracy=75.6, **_MULAN),
    "byol_mt_vit_s16.mulan_in1k_200ep": External(_MULAN_URL + "byol_multitask_vits_200ep_tgt_ckpt.pth", accuracy=74.5,
                                                 **_MULAN),
    "byol_mt_vit_b16.mulan_in1k_200ep": External(_MULAN_URL + "byol_multitask_vitb_200ep_tgt_ckpt.pth", accuracy=78.3,
                                                 **_MULAN),
    "byol_r50.mmselfsup_in1k_200ep": _mmselfsup("byol", 71.8,
                                                "byol_resnet50_16xb256-coslr-200e_in1k_20220825-de817331.pth"),
    "simsiam_r50.mmselfsup_in1k_200ep": _mmselfsup("simsiam", 69.8,
                                                   "simsiam_resnet50_8xb32-coslr-200e_in1k_20220825-efe91299.pth"),
    "simsiam_r50.mmselfsup_in1k_100ep": _mmselfsup("simsiam", 68.3,
                                                   "simsiam_resnet50_8xb32-coslr-100e_in1k_20220825-d07cb2e6.pth"),
}


def _cfg(name: str, tag: str = "") -> Dict[str, Any]:
    model = MODELS[name]
    arch, method = ARCHS[model.arch], METHODS[model.method]
    cfg = dict(
        hf_hub_id=hub.repo_id(name, tag) if tag and hub.repo_id(name, tag) in _RELEASED else None,
        num_classes=0, interpolation="bilinear", license="apache-2.0",
        notes=(f"recipe: {recipe_path(name, tag)}",) if tag else None,
        description=method.description, paper_name=method.paper_name, paper_ids=method.paper_ids,
        **FAMILIES[arch.family].cfg, **arch.data,
    )
    external = EXTERNAL.get(f"{name}.{tag}")
    if external:  # timm's way for weights outside the Hub: their URL; the filter fn converts the layout on load
        cfg.update(url=external.url, license=external.license.lower(), origin_url=external.published,
                   notes=(f"released by {external.source}: {external.published}",
                          f"reported: {external.accuracy} % top-1, {external.protocol}", f"sha256: {external.checksum}"))
    return cfg


def _tags(name: str) -> List[str]:
    """A name's tags, those with weights first (released here, then others'): timm's first tag is the one a bare
    name loads."""
    declared = list(ARCHS[MODELS[name].arch].tags)
    released = [tag for tag in declared if hub.repo_id(name, tag) in _RELEASED]
    external = [full.partition(".")[2] for full in EXTERNAL if full.partition(".")[0] == name]
    return released + external + [tag for tag in declared if tag not in released] or [""]


_RELEASED = hub.releases()  # timm's registry is built now, once: it lists the tags released at import
default_cfgs = generate_default_cfgs({
    f"{name}.{tag}" if tag else name: _cfg(name, tag) for name in MODELS for tag in _tags(name)
})


def fitting_archs(state: Mapping[str, Any]) -> str:
    """Which zoo architectures a backbone state dict is, tensor for tensor: the hint of a mismatch error."""
    import torch

    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    fits = []
    for arch, row in ARCHS.items():
        family = FAMILIES[row.family]
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            own = family.model_cls(**row.model_args, num_classes=0).state_dict()
        if shapes == {k: tuple(v.shape) for k, v in own.items() if not k.endswith("num_batches_tracked")}:
            fits.append(arch)
    if not fits:
        return f"It is the backbone of no zoo architecture ({', '.join(ARCHS)})."
    names = [name for name, model in MODELS.items() if model.arch in fits]
    return f"It is the backbone of {' / '.join(fits)}: load it as one of {', '.join(names[:4])}, ..."


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
            name, cfg.tag, file=cfg.file, hf_hub_id=cfg.hf_hub_id if explicit else None, url=cfg.url,
            revision=revision, cache_dir=cache_dir, recipe=recipe_path(name, cfg.tag) if cfg.tag in arch.tags else None,
        )
        cfg = dataclasses.replace(cfg, file=str(path), source=None, custom_load=True)  # ZooWeights.load_pretrained
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
