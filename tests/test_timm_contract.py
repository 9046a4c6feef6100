"""timm's own model tests on the zoo's names: every name is a timm model as timm checks its own (pytorch-image-models
tests/test_models.py at aa4b5850: test_model_default_cfgs and its non-standard twin, test_model_forward_features,
test_model_load_pretrained, test_model_features_pretrained). An architecture's network is the same for every method,
so the forward checks run once per architecture (the table's rows); the pretrained-cfg checks run on every name,
the pretrained loads on every tag that timm lists as pretrained (the tags released in this checkout here; the tags
of others' weights, served from 127.0.0.1, in test_external.py)."""
import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim

import ladder_zoo
from ladder_zoo import hub
from ladder_zoo.models import MODELS

ONE_PER_ARCH = sorted({model.arch: name for name, model in MODELS.items()}.values())
PRETRAINED = sorted(name for name in timm.list_models(pretrained=True) if name.split(".")[0] in MODELS)
RELEASED = [name for name in PRETRAINED if hub.repo_id(*name.split(".")) in hub.releases()]


def test_pretrained_list_is_the_tags_with_weights():
    """In timm a pretrained cfg with a weight source means the weights exist: the zoo's part of timm's pretrained
    list is exactly the tags released here and the tags of others' weights (models.EXTERNAL)."""
    assert PRETRAINED == ladder_zoo.list_models(pretrained=True) == ladder_zoo.list_pretrained()
    assert RELEASED  # this checkout releases byol_r18_cifar.cifar10_200ep (hub/, releases.json)
    for name in ladder_zoo.list_pretrained(published_only=False):
        assert (name in PRETRAINED) == bool(timm.get_pretrained_cfg(name).has_weights)


@pytest.mark.parametrize("name", RELEASED)
def test_model_load_pretrained(name):
    """timm's test_model_load_pretrained: weights load, with in_chans != 3 and another head."""
    timm.create_model(name, pretrained=True, in_chans=1, num_classes=5)
    timm.create_model(name, pretrained=True, in_chans=1, num_classes=0)


@pytest.mark.parametrize("name", RELEASED)
def test_model_features_pretrained(name):
    """timm's test_model_features_pretrained."""
    timm.create_model(name, pretrained=True, features_only=True)


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
