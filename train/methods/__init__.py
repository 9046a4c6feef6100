"""Methods: the base objectives (byol.py, simsiam.py), the Ladder model over either (ladder.py) and the
multi-task views (multitask.py)."""
import timm
from torch import nn

import ladder_zoo
from ladder_zoo.models import ARCHITECTURES

from ..config import Config
from .ladder import LadderSiamese


def build_backbone(name: str, **kwargs) -> nn.Module:
    """The zoo model ``name`` (exactly what ``ladder_zoo.create_model`` gives and export writes back), or any
    timm model with ``feature_info`` and ``forward_intermediates``; no classifier. ``kwargs`` (``model_kwargs``)
    go to timm, e.g. ``drop_path_rate`` or ``dynamic_img_size`` (a ViT taking local crops of another size)."""
    if name in ARCHITECTURES:
        return ladder_zoo.create_model(name, num_classes=0, **kwargs)
    model = timm.create_model(name, num_classes=0, **kwargs)
    if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
        raise ValueError(f"model={name}: the backbone needs timm's feature_info and forward_intermediates")
    return model


def build_model(cfg: Config) -> LadderSiamese:
    return LadderSiamese(build_backbone(cfg.model, **cfg.model_kwargs), cfg.method)


__all__ = ["LadderSiamese", "build_backbone", "build_model"]
