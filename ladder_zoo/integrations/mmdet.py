"""mmdet 3.x: a registered backbone on any zoo name, the ``ladder-zoo://`` checkpoint scheme, and a converter.

    custom_imports = dict(imports=["ladder_zoo.integrations.mmdet"], allow_failed_imports=False)
    model = dict(backbone=dict(_delete_=True, type="LadderZooBackbone", name="ladder_byol_r50.in1k_200ep"), ...)

or keep mmdet's own ResNet (same parameter names as the zoo's) and load the zoo's weights into it:

    backbone=dict(type="ResNet", depth=50, init_cfg=dict(type="Pretrained",
                  checkpoint="ladder-zoo://ladder_byol_r50.in1k_200ep"))

``configs/mmdet/mask-rcnn_ladder-byol-r50_fpn_1x_coco.py`` is a complete Mask R-CNN R50-FPN 1x COCO config.
The weights are RGB: ``data_preprocessor`` mean / std = the ``pretrained_cfg`` mean / std x 255 with
``bgr_to_rgb=True`` (mmdet decodes images as BGR). ``ladder-zoo convert NAME --to mmdet OUT.pth`` writes a
``state_dict`` checkpoint for mmdet's ResNet. The backbone and the scheme are ``_mmengine``'s, shared with the
mmseg adapter: mmengine alone (``pip install mmengine``) is enough to register them.
"""
from pathlib import Path
from typing import Dict, Optional

import torch

from ._common import model_to_convert, pixel_stats, resnet_depth
# SCHEME: this module's API before _mmengine
from ._mmengine import MMENGINE_MODELS, SCHEME, convert_state_dict  # noqa: F401

if MMENGINE_MODELS is not None:  # mmengine installed: the backbone and the scheme are registered
    from ._mmengine import LadderZooBackbone, load_from_ladder_zoo  # noqa: F401  (as this module's, before _mmengine)


def convert(name: str, out: Path, checkpoint: Optional[str] = None, revision: Optional[str] = None) -> Dict[str, list]:
    """Write ``name``'s weights (or ``checkpoint``'s) as an mmdet ResNet checkpoint; returns pixel mean / std and
    the ResNet's depth."""
    model = model_to_convert(name, checkpoint, revision)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": convert_state_dict(model.state_dict()),
                "meta": {"ladder_zoo": name, **pixel_stats(model)}}, out)
    return {**pixel_stats(model), "depth": resnet_depth(model)}
