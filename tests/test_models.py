"""The registry, the model builder and weight loading into every kind of model timm can build."""
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

import ladder_zoo
from ladder_zoo import hub
from helpers import random_state_dict, reference_features
from train.checkpoint import SSL_FORMAT, load_ssl_checkpoint

from ladder_zoo.models import ARCHS, EXTERNAL, METHODS


@pytest.fixture(autouse=True)
def _isolated(isolated_hub):
    """Each test decides which weights exist."""


def test_every_name_is_registered_with_timm():
    expected = {f"{m}_{a}" for a, row in ARCHS.items() for m in (row.methods or METHODS)}
    assert len(expected) == 30 and set(ladder_zoo.list_models()) == expected
    assert expected <= set(timm.list_models())
    assert ladder_zoo.list_models("ladder_*_r50") == sorted(f"{m}_r50" for m in METHODS if m.startswith("ladder"))
    declared = ladder_zoo.list_pretrained(published_only=False)
    assert "ladder_byol_r50.in1k_200ep" in declared and "byol_r18_cifar.cifar10_200ep" in declared
    assert ladder_zoo.list_pretrained() == sorted(EXTERNAL)  # nothing released in this test: others' weights only
    # timm lists a tag as pretrained only where it has weights (released when ladder_zoo was imported); the others
    # are registered tags without a weight source, and pretrained=True on them names their recipe
    assert "ladder_byol_r50.in1k_200ep" in timm.list_models(include_tags=True)
    assert "ladder_byol_r50.in1k_200ep" not in timm.list_models(pretrained=True)
    assert not timm.get_pretrained_cfg("ladder_byol_r50.in1k_200ep").has_weights


@pytest.mark.parametrize("name,size,channels,strides", [
    ("ladder_byol_r50", 64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    ("simsiam_r18", 64, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("byol_r18_cifar", 32, [64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),
])
def test_features_only_stages(name, size, channels, strides):
    model = timm.create_model(name, features_only=True)
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == strides
    feats = model(torch.randn(2, 3, size, size))
    assert [f.shape[1] for f in feats] == channels
    assert [size // f.shape[-1] for f in feats] == strides
    assert isinstance(ladder_zoo.create_model(name), timm.models.ResNet)


def test_cifar_stem():
    model = ladder_zoo.create_model("ladder_byol_r18_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="CIFAR-stem"):
        ladder_zoo.create_model("ladder_byol_r18_cifar", output_stride=16)


def test_features_equal_timm_resnet50_with_same_weights(tmp_path):
    state = random_state_dict("byol_r50", seed=1)
    save_file(state, str(tmp_path / "w.safetensors"))
    ours = ladder_zoo.create_model("byol_r50", features_only=True, checkpoint_path=tmp_path / "w.safetensors").eval()
    ref = timm.create_model("resnet50", features_only=True).eval()
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("out_indices", [(5,), (-6,), (), 0, 6])
def test_out_indices_out_of_range(out_indices):
    with pytest.raises(ValueError, match="out_indices.*res2"):
        ladder_zoo.create_model("byol_r50", features_only=True, out_indices=out_indices)


def test_out_indices_select_stages():
    model = ladder_zoo.create_model("byol_r50", features_only=True, out_indices=(1, -1))
    assert model.feature_info.channels() == [256, 2048]


def test_unknown_name_lists_close_names():
    with pytest.raises(ladder_zoo.UnknownModelError, match="ladder_byol_r50") as e:
        ladder_zoo.create_model("ladder_byol_r5O")
    assert "ladder_byol_r18" in str(e.value)
    with pytest.raises(ladder_zoo.UnknownModelError, match="in1k_200ep"):
        ladder_zoo.create_model("ladder_byol_r50.in1k_100ep")


def test_unpublished_tag_names_the_recipe_never_random_weights():
    with pytest.raises(ladder_zoo.WeightsNotFoundError, match="train/configs/ladder_byol_r50_in1k_200ep.yaml"):
        ladder_zoo.create_model("ladder_byol_r50", pretrained=True)
    with pytest.raises(ladder_zoo.WeightsNotFoundError, match="no pretrained tag"):
        timm.create_model("byol_r18", pretrained=True)


@pytest.fixture
def local_release(isolated_hub):
    """byol_r18_cifar.cifar10_200ep published, its only copy in a LADDER_ZOO_HUB_DIR folder."""
    return isolated_hub("byol_r18_cifar", "cifar10_200ep", seed=3)


def test_pretrained_from_local_hub_folder(local_release):
    x = torch.randn(2, 3, 32, 32)
    model = ladder_zoo.create_model("byol_r18_cifar.cifar10_200ep", pretrained=True, features_only=True).eval()
    with torch.no_grad():
        for a, b in zip(model(x), reference_features("byol_r18_cifar", local_release, x)):
            torch.testing.assert_close(a, b)


def test_num_classes_head_is_fresh_with_a_warning(local_release):
    with pytest.warns(UserWarning, match="freshly initialised"):
        model = ladder_zoo.create_model("byol_r18_cifar", pretrained=True, num_classes=10)
    assert model.fc.out_features == 10
    torch.testing.assert_close(model.layer4[1].conv2.weight, local_release["layer4.1.conv2.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ladder_zoo.create_model("byol_r18_cifar", pretrained=True)  # no head: no warning


def test_in_chans_adapts_the_stem(local_release):
    model = ladder_zoo.create_model("byol_r18_cifar", pretrained=True, in_chans=1, features_only=True)
    # timm's adapt_input_conv sums the file's fp16 stem in fp32 and returns it in the file's dtype
    torch.testing.assert_close(model.conv1.weight, local_release["conv1.weight"].sum(1, keepdim=True).half().float())
    assert model(torch.randn(1, 1, 32, 32))[-1].shape == (1, 512, 4, 4)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_with_weights(tmp_path, output_stride):
    state = random_state_dict("byol_r50", seed=2)
    save_file(state, str(tmp_path / "w.safetensors"))
    model = ladder_zoo.create_model("byol_r50", checkpoint_path=tmp_path / "w.safetensors", features_only=True,
                                    output_stride=output_stride)
    assert model.feature_info.reduction()[-1] == output_stride
    assert model(torch.randn(1, 3, 64, 64))[-1].shape[-1] == 64 // output_stride
    torch.testing.assert_close(model.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])


def test_supervised_checkpoint_with_fc_loads_features_only(tmp_path):
    """timm's own checkpoint_path + features_only trips over fc.* keys; ours drops the head it cannot hold."""
    state = {**random_state_dict("byol_r18", seed=4), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "sup.pth")
    model = ladder_zoo.create_model("byol_r18", checkpoint_path=tmp_path / "sup.pth", features_only=True)
    torch.testing.assert_close(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    full = ladder_zoo.create_model("byol_r18", checkpoint_path=tmp_path / "sup.pth", num_classes=1000)
    torch.testing.assert_close(full.fc.weight, state["fc.weight"])


def _ssl_checkpoint(path, state):
    heads = {"projectors.res5.0.weight": torch.randn(8, 512), "predictors.res5.0.weight": torch.randn(8, 8)}
    model = {**{f"backbone.{k}": v for k, v in state.items()}, **heads,
             **{f"target_backbone.{k}": v + 1 for k, v in state.items() if v.is_floating_point()}}
    torch.save({"format": SSL_FORMAT, "model_name": "ladder_byol_r18_cifar", "config": {"method": "ladder_byol"},
                "step": 7, "epoch": 1, "model": model, "optimizer": {"state": {}, "param_groups": []}}, path)


def test_ssl_checkpoint_gives_the_online_backbone(tmp_path):
    state = random_state_dict("ladder_byol_r18_cifar", seed=5)
    _ssl_checkpoint(tmp_path / "ssl.pt", state)
    model = ladder_zoo.create_model("ladder_byol_r18_cifar", checkpoint_path=tmp_path / "ssl.pt", features_only=True)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])

    ckpt = load_ssl_checkpoint(tmp_path / "ssl.pt")
    assert (ckpt.step, ckpt.model_name, ckpt.config["method"]) == (7, "ladder_byol_r18_cifar", "ladder_byol")
    assert "projectors.res5.0.weight" in ckpt.model and ckpt.optimizer is not None
    target = ckpt.create_backbone(target=True)
    torch.testing.assert_close(target.conv1.weight, state["conv1.weight"] + 1)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    save_file(random_state_dict("byol_r18", seed=6), str(tmp_path / "r18.safetensors"))
    with pytest.raises(ladder_zoo.WeightsMismatchError, match="does not fit byol_r50: missing.*It is the backbone of r18: load it as one of byol_r18"):
        ladder_zoo.create_model("byol_r50", checkpoint_path=tmp_path / "r18.safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    save_file(random_state_dict("byol_r18_cifar", seed=7), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" + data[9:])
    with pytest.raises(ladder_zoo.WeightsIntegrityError, match="truncated or corrupt"):
        ladder_zoo.create_model("byol_r18_cifar", checkpoint_path=path)


def test_missing_checkpoint_file():
    with pytest.raises(ladder_zoo.WeightsNotFoundError, match="do not exist"):
        ladder_zoo.create_model("byol_r18_cifar", checkpoint_path="/no/such/file.safetensors")


def test_sharded_weights_round_trip(tmp_path, isolated_hub):
    state = isolated_hub("byol_r18_cifar", "cifar10_200ep", seed=8, max_shard_size="5MB")
    folder = tmp_path / "hub" / hub.repo_id("byol_r18_cifar", "cifar10_200ep")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (folder / "model.safetensors.index.json").is_file()
    assert all(p.stat().st_size < 5_100_000 for p in folder.glob("*.safetensors"))
    model = ladder_zoo.create_model("byol_r18_cifar", pretrained=True)
    torch.testing.assert_close(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("source", ["released tag", "url", "checkpoint_path"])
def test_one_loading_route(isolated_hub, tmp_path, monkeypatch, source):
    """The zoo's Hub repositories, others' URLs and local checkpoints go one way: one local file, read as data by
    ZooWeights.load_pretrained (timm's custom_load hook), then timm's own load_pretrained with the zoo's filter fn."""
    from ladder_zoo import layouts, models

    state = isolated_hub("byol_r18_cifar", "cifar10_200ep", seed=9)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    calls = []
    timm_load = models.load_pretrained
    monkeypatch.setattr(models, "load_pretrained", lambda model, cfg, **kw: calls.append(kw["filter_fn"].func)
                        or timm_load(model, cfg, **kw))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    kwargs = {"released tag": dict(model_name="byol_r18_cifar.cifar10_200ep", pretrained=True),
              "url": dict(model_name="byol_r18_cifar", pretrained=True,
                          pretrained_cfg_overlay=dict(url=(tmp_path / "ckpt.pth").as_uri())),
              "checkpoint_path": dict(model_name="byol_r18_cifar", checkpoint_path=tmp_path / "ckpt.pth")}[source]
    model = ladder_zoo.create_model(**kwargs, features_only=True)
    assert calls == [layouts.checkpoint_filter_fn]
    torch.testing.assert_close(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
