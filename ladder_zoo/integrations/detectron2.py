"""detectron2: a registered ``Backbone`` (and FPN) on any zoo name, and a converter to detectron2's ResNet.

Backbone (importing this module registers it; detectron2 is not on PyPI, so the adapter is import-guarded):

    from detectron2.config import get_cfg
    from ladder_zoo.integrations.detectron2 import add_ladder_zoo_config
    cfg = get_cfg(); add_ladder_zoo_config(cfg)
    cfg.merge_from_file("configs/detectron2/mask_rcnn_ladder_byol_r50_fpn_1x.yaml")

Config keys: ``MODEL.BACKBONE.NAME`` = ``build_ladder_zoo_fpn_backbone`` (or ``build_ladder_zoo_backbone``),
``MODEL.LADDER_ZOO.NAME`` (zoo name with tag), ``.PRETRAINED``, ``.CHECKPOINT`` (a file instead of the tag's
weights), ``.OUT_FEATURES`` (res2..res5), ``.NORM`` ("FrozenBN" or "BN"); ``MODEL.BACKBONE.FREEZE_AT`` as for
detectron2's ResNet. The weights are RGB: ``INPUT.FORMAT: RGB`` and ``MODEL.PIXEL_MEAN / PIXEL_STD`` = the
``pretrained_cfg`` mean / std x 255 (ImageNet tags: [123.675, 116.28, 103.53] / [58.395, 57.12, 57.375]).

Training from the command line: detectron2's ``tools/train_net.py`` rejects the ``MODEL.LADDER_ZOO`` keys; use
``python -m ladder_zoo.integrations.detectron2_train --config-file ...`` (the same script, keys added).

Converter (no detectron2 needed): ``ladder-zoo convert NAME --to detectron2 OUT.pkl`` writes the weights in
detectron2's ResNet names (MoCo's convention: ``stem.``, ``resN``, ``convK.norm``, ``shortcut``) with
``matching_heuristics``, for ``MODEL.WEIGHTS`` with ``MODEL.BACKBONE.NAME: build_resnet_fpn_backbone``.
"""
import pickle
import re
from pathlib import Path
from typing import Dict, Mapping

import torch

from ..errors import WeightsError, phrased_for
from ..factory import create_model
from ..models import LEVELS
from ._common import (feature_specs, freeze_levels, frozen_batchnorm, model_to_convert, pixel_stats,
                      refuse_cifar_stem, resnet_depth)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm / torchvision ResNet keys -> detectron2 ResNet keys (BatchNorm counters dropped)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue
        new = key if key.startswith("layer") else "stem." + key
        new = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", new)
        new = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", new)
        new = new.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        out[new] = value
    return out


def convert(name: str, out: Path, checkpoint: str = None, revision: str = None) -> Dict[str, list]:
    """Write ``name``'s weights (or ``checkpoint``'s) for detectron2's ResNet; returns the pixel mean / std and
    the ResNet's depth."""
    model = model_to_convert(name, checkpoint, revision)
    weights = {k: v.detach().float().numpy() for k, v in convert_state_dict(model.state_dict()).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump({"model": weights, "__author__": "ladder-zoo", "matching_heuristics": True}, f)
    return {**pixel_stats(model), "depth": resnet_depth(model)}


try:
    from detectron2.config import CfgNode
    from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
except ImportError:  # detectron2 is optional: the converter above needs none of it
    BACKBONE_REGISTRY = None

if BACKBONE_REGISTRY is not None:

    def add_ladder_zoo_config(cfg: "CfgNode") -> None:
        """Add the ``MODEL.LADDER_ZOO`` keys (defaults below) to a detectron2 config; a second call changes nothing."""
        if "LADDER_ZOO" in cfg.MODEL:
            return
        cfg.MODEL.LADDER_ZOO = CfgNode()
        cfg.MODEL.LADDER_ZOO.NAME = "ladder_byol_r50.in1k_200ep"
        cfg.MODEL.LADDER_ZOO.PRETRAINED = True
        cfg.MODEL.LADDER_ZOO.CHECKPOINT = ""
        cfg.MODEL.LADDER_ZOO.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.LADDER_ZOO.NORM = "FrozenBN"

    class LadderZooBackbone(Backbone):
        """A zoo model's stages as detectron2 features res2..res5 (strides 4..32), channels from feature_info."""

        def __init__(self, name: str, out_features=("res2", "res3", "res4", "res5"), pretrained: bool = True,
                     checkpoint: str = "", freeze_at: int = 2, norm: str = "FrozenBN"):
            super().__init__()
            refuse_cifar_stem(name)
            unknown = [f for f in out_features if f not in LEVELS[1:]]
            if unknown or not out_features:
                raise ValueError(f"MODEL.LADDER_ZOO.OUT_FEATURES={list(out_features)}: "
                                 "choose among res2, res3, res4, res5")
            self.model = create_model(name, features_only=True, out_indices=[LEVELS.index(f) for f in out_features],
                                      pretrained=pretrained and not checkpoint, checkpoint_path=checkpoint or None)
            if norm == "FrozenBN":
                self.model = frozen_batchnorm(self.model)
            elif norm != "BN":
                raise ValueError(f"MODEL.LADDER_ZOO.NORM={norm}: FrozenBN or BN")
            freeze_levels(self.model, freeze_at)
            specs = feature_specs(self.model)
            self._out_features = [level for level, _, _ in specs]
            self._out_feature_channels = {level: c for level, c, _ in specs}
            self._out_feature_strides = {level: s for level, _, s in specs}

        def forward(self, x):
            return dict(zip(self._out_features, self.model(x)))

        def output_shape(self):
            return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                    for f in self._out_features}

    @BACKBONE_REGISTRY.register()
    def build_ladder_zoo_backbone(cfg, input_shape):
        z = cfg.MODEL.LADDER_ZOO
        try:
            return LadderZooBackbone(z.NAME, z.OUT_FEATURES, z.PRETRAINED, z.CHECKPOINT,
                                     cfg.MODEL.BACKBONE.FREEZE_AT, z.NORM)
        except WeightsError as e:  # the fix as a config key, where the user is
            raise phrased_for(e, "MODEL.LADDER_ZOO.PRETRAINED False", "MODEL.LADDER_ZOO.CHECKPOINT PATH") from e

    @BACKBONE_REGISTRY.register()
    def build_ladder_zoo_fpn_backbone(cfg, input_shape):
        return FPN(bottom_up=build_ladder_zoo_backbone(cfg, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
                   out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
                   fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
