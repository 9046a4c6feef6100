"""timm's own model tests on the zoo's names: every name is a timm model as timm checks its own (pytorch-image-models
tests/test_models.py: test_model_default_cfgs and its non-standard twin, test_model_forward_features). An
architecture's network is the same for every method, so the forward checks run once per architecture (the table's
rows); the pretrained-cfg checks run on every name."""
import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim

from ladder_zoo.models import MODELS

ONE_PER_ARCH = sorted({model.arch: name for name, model in MODELS.items()}.values())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pretrained_cfg_names_real_parameters(name):
    model = timm.create_model(name)
    cfg, state = model.pretrained_cfg, model.state_dict()
    assert model.num_classes == cfg["num_classes"] == 0 and model.num_features > 0 and model.head_hidden_size > 0
    assert cfg["first_conv"] + ".weight" in state
    assert timm.create_model(name, num_classes=3).state_dict().keys() >= {cfg["classifier"] + ".weight"}
    assert cfg["architecture"] == name and cfg.get("hf_hub_id") in (None, f"ladder-zoo/{name}.{cfg.get('tag')}")


@pytest.mark.parametrize("name", ONE_PER_ARCH)
def test_model_default_cfgs(name):
    """timm's test_model_default_cfgs (plain ViTs: test_model_default_cfgs_non_std, a forward)."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        if cfg["pool_size"] is None:  # a plain ViT's tokens have no pool size: timm's non-standard models
            assert model(x).shape == (1, model.head_hidden_size)
            return
        fmt = getattr(model, "output_fmt", "NCHW")
        spatial, channels = get_spatial_dim(fmt), get_channel_dim(fmt)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert tuple(features.shape[a] for a in spatial) == tuple(cfg["pool_size"])
        assert features.shape[channels] == model.num_features and pre_logits.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model(x).shape == pre_logits.shape
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.ndim == 4 and tuple(unpooled.shape[a] for a in spatial) == tuple(cfg["pool_size"])
        model = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert tuple(model(x).shape[a] for a in spatial) == tuple(cfg["pool_size"])


@pytest.mark.parametrize("name", ONE_PER_ARCH)
def test_model_forward_features(name):
    """timm's test_model_forward_features: channels and strides as feature_info says, no NaN."""
    model = timm.create_model(name, features_only=True).eval()
    size = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        outputs = model(torch.randn(1, *size))
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) == len(outputs) >= 3
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[1] == c and not torch.isnan(o).any()
        assert o.shape[2] <= math.ceil(size[1] / r) + 1 and o.shape[3] <= math.ceil(size[2] / r) + 1
