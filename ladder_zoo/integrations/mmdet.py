"""mmdet 3.x: a registered backbone on any zoo name, the ``ladder-zoo://`` checkpoint scheme, and a converter.

    custom_imports = dict(imports=["ladder_zoo.integrations.mmdet"], allow_failed_imports=False)
    model = dict(backbone=dict(_delete_=True, type="LadderZooBackbone", name="ladder_byol_r50.in1k_200ep"), ...)

or keep mmdet's own ResNet (same parameter names as the zoo's) and load the zoo's weights into it:

    backbone=dict(type="ResNet", depth=50, init_cfg=dict(type="Pretrained",
                  checkpoint="ladder-zoo://ladder_byol_r50.in1k_200ep"))

``configs/mmdet/mask-rcnn_ladder-byol-r50_fpn_1x_coco.py`` is a complete Mask R-CNN R50-FPN 1x COCO config.
The weights are RGB: ``data_preprocessor`` mean / std = the ``pretrained_cfg`` mean / std x 255 with
``bgr_to_rgb=True`` (mmdet decodes images as BGR). ``ladder-zoo convert NAME --to mmdet OUT.pth`` writes a
``state_dict`` checkpoint for mmdet's ResNet. mmengine alone (``pip install mmengine``) is enough to register
the backbone and the scheme: they go in mmengine's root ``MODELS`` registry, which mmdet's registry (a child of
it) falls back to, so ``MODELS.build`` finds the backbone from mmengine's and from mmdet's registry alike.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..errors import WeightsError, phrased_for
from ..factory import create_model
from ._common import freeze_levels, model_to_convert, pixel_stats, refuse_cifar_stem, resnet_depth

SCHEME = "ladder-zoo://"
INIT_CFG_FIXES = ("no init_cfg (random weights)", "a file as the init_cfg checkpoint")  # errors.phrased_for's


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmdet's ResNet uses the zoo's (torchvision's) parameter names: only the classifier is dropped."""
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}


def convert(name: str, out: Path, checkpoint: Optional[str] = None, revision: Optional[str] = None) -> Dict[str, list]:
    """Write ``name``'s weights (or ``checkpoint``'s) as an mmdet ResNet checkpoint; returns pixel mean / std and
    the ResNet's depth."""
    model = model_to_convert(name, checkpoint, revision)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": convert_state_dict(model.state_dict()),
                "meta": {"ladder_zoo": name, **pixel_stats(model)}}, out)
    return {**pixel_stats(model), "depth": resnet_depth(model)}


try:
    from mmengine.model import BaseModule
    from mmengine.registry import MODELS  # the root registry: mmdet's (and every other OpenMMLab child registry)
    from mmengine.runner import CheckpointLoader  # falls back to it, so registering here serves them all
except ImportError:  # mmengine is optional: the converter above needs none of it
    MODELS = None

if MODELS is not None:

    @CheckpointLoader.register_scheme(prefixes=SCHEME)
    def load_from_ladder_zoo(filename: str, map_location=None) -> Dict[str, torch.Tensor]:
        """``ladder-zoo://NAME[.TAG]``: the zoo weights of NAME, resolved and verified by ladder_zoo."""
        try:
            model = create_model(filename[len(SCHEME):], pretrained=True)
        except WeightsError as e:
            raise phrased_for(e, *INIT_CFG_FIXES) from e
        return convert_state_dict(model.state_dict())


    @MODELS.register_module()
    class LadderZooBackbone(BaseModule):
        """A zoo model as an mmdet backbone: a tuple of its ``out_indices`` stages (1..4 = res2..res5).

        ``frozen_stages`` and ``norm_eval`` mean what they mean for mmdet's ResNet (-1: nothing frozen, 0: the stem,
        1: stem and res2, ...). Weights come from ladder_zoo: the tag's pretrained weights by default, ``checkpoint``
        (a file) instead, or ``init_cfg=dict(type="Pretrained", checkpoint="ladder-zoo://NAME" or a file)``, loaded
        strictly.
        """

        def __init__(self, name: str, out_indices: Sequence[int] = (1, 2, 3, 4), frozen_stages: int = 1,
                     norm_eval: bool = True, pretrained: bool = True, checkpoint: Optional[str] = None,
                     init_cfg: Optional[dict] = None, **create_kwargs):
            super().__init__(init_cfg)
            refuse_cifar_stem(name)
            from_init_cfg = bool(init_cfg) and init_cfg.get("type") == "Pretrained"
            try:
                self.body = create_model(name, features_only=True, out_indices=tuple(out_indices),
                                         pretrained=pretrained and not checkpoint and not from_init_cfg,
                                         checkpoint_path=checkpoint, **create_kwargs)
            except WeightsError as e:  # the fix as a config key, where the user is
                raise phrased_for(e, "backbone.pretrained=False (in the config, or --cfg-options "
                                  "model.backbone.pretrained=False)", "backbone.checkpoint=PATH") from e
            self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
            self.name = name
            if (pretrained or checkpoint) and not from_init_cfg:
                self._is_init = True  # the weights came from ladder_zoo: mmengine's init_weights must not overwrite them
            self._freeze()

        def init_weights(self) -> None:
            if self.init_cfg and self.init_cfg.get("type") == "Pretrained":
                source = self.init_cfg["checkpoint"]
                name = source[len(SCHEME):] if source.startswith(SCHEME) else self.name
                try:
                    loaded = create_model(name, features_only=True, out_indices=self.body.feature_info.out_indices,
                                          pretrained=True, checkpoint_path=None if source.startswith(SCHEME) else source)
                except WeightsError as e:
                    raise phrased_for(e, *INIT_CFG_FIXES) from e
                self.body.load_state_dict(loaded.state_dict())
                self._is_init = True
                return
            super().init_weights()

        def _freeze(self) -> None:
            freeze_levels(self.body, self.frozen_stages + 1, eval_mode=True)

        def train(self, mode: bool = True):
            super().train(mode)
            self._freeze()
            if mode and self.norm_eval:
                for m in self.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            return self

        def forward(self, x: torch.Tensor):
            return tuple(self.body(x))
