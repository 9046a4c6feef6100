"""Others' weights as zoo tags (``models.EXTERNAL``): each source's file in its exact layout (tests/sources.py), served
from 127.0.0.1 through the real download code (torch.hub's ``download_url_to_file`` into ``$TORCH_HOME/hub/checkpoints``)
and converted on load by the zoo's filter fn. The features equal the source network's; timm's own pretrained tests
(pytorch-image-models tests/test_models.py at aa4b5850) pass on every tag; a bad download or no network is one line."""
import dataclasses

import pytest
import timm
import torch
from timm.models import _registry

import ladder_zoo
from ladder_zoo.models import EXTERNAL
from sources import FileServer, dino_vit_backbone, mmselfsup_state, reference, resnet50_backbone, save_mmselfsup

# tag -> (how its source publishes the file, the source network, seed of its random weights)
TAGS = {
    "byol_mt_r50.mulan_in1k_800ep": ("mulan", "resnet50", 1),
    "byol_mt_r50.mulan_in1k_200ep": ("mulan", "resnet50", 2),
    "byol_mt_vit_s16.mulan_in1k_200ep": ("mulan", "vit_s16", 3),
    "byol_mt_vit_b16.mulan_in1k_200ep": ("mulan", "vit_b16", 4),
    "byol_r50.mmselfsup_in1k_200ep": ("byol", "resnet50", 5),
    "simsiam_r50.mmselfsup_in1k_200ep": ("simsiam", "resnet50", 6),
    "simsiam_r50.mmselfsup_in1k_100ep": ("simsiam", "resnet50", 7),
}
VIT = {"vit_s16": (384, 6), "vit_b16": (768, 12)}
# tags whose file has the layout and network of another's, which the feature test covers; timm's tests load them
SAME_AS = {"byol_mt_r50.mulan_in1k_800ep": "byol_mt_r50.mulan_in1k_200ep",
           "simsiam_r50.mmselfsup_in1k_100ep": "simsiam_r50.mmselfsup_in1k_200ep"}


def publish(root, tag):
    """The file of ``tag`` as its source publishes it, under ``root``; returns (its path, the backbone's state)."""
    how, network, seed = TAGS[tag]
    backbone = dino_vit_backbone(*VIT[network], seed=seed) if network in VIT else resnet50_backbone(seed)
    name = EXTERNAL[tag].url.rsplit("/", 1)[1]
    if how == "mulan":  # main.py @6f38ec9b: torch.save(model.module.backbone.state_dict(), ...), the target's for ViTs
        path = root / name
        torch.save(backbone, path)
        return path, backbone
    return save_mmselfsup(root / name[:name.rindex("_")], mmselfsup_state(how, backbone, seed)), backbone


def test_every_tag_is_tested_and_traced():
    assert set(TAGS) == set(EXTERNAL) == {n for n in timm.list_models(pretrained=True) if n in EXTERNAL}
    for tag, external in EXTERNAL.items():
        cfg = timm.get_pretrained_cfg(tag)
        assert cfg.url == external.url and cfg.license == external.license.lower() and "@" in external.published
    mmselfsup = [e for e in EXTERNAL.values() if "mmselfsup" in e.url]
    assert all(e.checksum.startswith(f"sha256 prefix {e.url[-12:-4]} ") for e in mmselfsup)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every tag's file published on 127.0.0.1, timm's registry pointing at it, an empty torch.hub cache."""
    root = tmp_path_factory.mktemp("published")
    files = {tag: publish(root, tag) for tag in TAGS}
    with FileServer(root) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch")))
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        for tag, (path, _) in files.items():  # the test's internet: the same file names, on 127.0.0.1
            cfg = _registry._model_pretrained_cfgs[tag]
            mp.setitem(_registry._model_pretrained_cfgs, tag, dataclasses.replace(cfg, url=f"{server.url}/{path.name}"))
        yield server, {tag: state for tag, (_, state) in files.items()}


@pytest.mark.parametrize("tag", [tag for tag in sorted(TAGS) if tag not in SAME_AS])
def test_features_equal_the_source_network(served, tag):
    server, states = served
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = ladder_zoo.create_model(tag, pretrained=True).eval()(x)
        theirs = reference(TAGS[tag][1])(states[tag])(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_the_target_backbone_on_request(served):
    """mmselfsup's BYOL file holds the EMA target too (target_net): the online backbone by default (what mmselfsup
    extracts and evaluates), the target with pretrained_weights='target'."""
    _, states = served
    tag = "byol_r50.mmselfsup_in1k_200ep"
    target = ladder_zoo.create_model(tag, pretrained=True, pretrained_weights="target")
    torch.testing.assert_close(target.conv1.weight, states[tag]["conv1.weight"] + 0.01)


def test_downloaded_once_then_offline_from_the_cache(served, hub_env):
    server, _ = served
    tag = "byol_mt_vit_s16.mulan_in1k_200ep"
    for _ in range(2):
        ladder_zoo.create_model(tag, pretrained=True)
    name = timm.get_pretrained_cfg(tag).url.rsplit("/", 1)[1]
    assert server.requests.count(("GET", f"/{name}")) == 1
    server.requests.clear()
    hub_env({"HF_HUB_OFFLINE": "1"})
    ladder_zoo.create_model(tag, pretrained=True, features_only=True)
    assert server.requests == []


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_model_load_pretrained(served, tag):
    """timm's test_model_load_pretrained: weights load, with in_chans != 3 and another head."""
    timm.create_model(tag, pretrained=True, in_chans=1, num_classes=5)
    timm.create_model(tag, pretrained=True, in_chans=1, num_classes=0)


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_model_features_pretrained(served, tag):
    """timm's test_model_features_pretrained."""
    timm.create_model(tag, pretrained=True, features_only=True)


# --- bad inputs: one line each, nothing half-written ----------------------------------------------------------------
def one_line(error, *words):
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_download_that_is_not_the_named_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "byol_r50_20220825-00000000.pth").write_bytes(b"not the published bytes")
    with FileServer(tmp_path / "www") as server, pytest.raises(ladder_zoo.WeightsIntegrityError) as e:
        ladder_zoo.create_model("byol_r50.mmselfsup_in1k_200ep", pretrained=True,
                                pretrained_cfg_overlay=dict(url=f"{server.url}/byol_r50_20220825-00000000.pth"))
    one_line(e, "is not the file its name promises", "nothing was kept")
    assert not any((tmp_path / "torch").rglob("*.pth*"))  # no partial file left behind


def test_no_network_and_nothing_cached(tmp_path, monkeypatch, hub_env):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://127.0.0.1:9/byol_multitask_resnet50_200ep_ckpt.pth"  # port 9: refused
    with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
        ladder_zoo.create_model("byol_mt_r50.mulan_in1k_200ep", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    one_line(e, "Could not download", "put the file at", str(tmp_path / "torch"))
    hub_env({"HF_HUB_OFFLINE": "1"})  # read by huggingface_hub at import: hub_env reloads its constants
    with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
        ladder_zoo.create_model("byol_mt_r50.mulan_in1k_200ep", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    one_line(e, "HF_HUB_OFFLINE is set", "is not cached")


def test_truncated_or_corrupt_cached_file(tmp_path, monkeypatch):
    """The published URLs' files in the cache, damaged: found without network, refused in one line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    tag = "byol_mt_r50.mulan_in1k_200ep"
    path, _ = publish(tmp_path, tag)  # MULAN publishes no checksum: torch.load finds the damage
    (cache / path.name).write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ladder_zoo.WeightsIntegrityError) as e:
        ladder_zoo.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(url=EXTERNAL[tag].url))
    one_line(e, str(cache / path.name), "truncated")
    tag = "simsiam_r50.mmselfsup_in1k_100ep"
    (cache / EXTERNAL[tag].url.rsplit("/", 1)[1]).write_bytes(b"corrupt")  # a sha256 prefix: checked on every load
    with pytest.raises(ladder_zoo.WeightsIntegrityError) as e:
        ladder_zoo.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(url=EXTERNAL[tag].url))
    one_line(e, "its sha256 does not start with d07cb2e6", "Delete it")
