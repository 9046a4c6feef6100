"""Weights through the real huggingface_hub client against a Hub served on 127.0.0.1 (HF_ENDPOINT).

Each load sees the Hub as a fresh interpreter with its environment would (the ``hub_env`` fixture: huggingface_hub
reads HF_ENDPOINT and HF_HUB_OFFLINE at import); where ladder_zoo must not be importable, a fresh interpreter it is.
"""
import json
import time

import pytest
import torch

import ladder_zoo
from helpers import ROOT, make_release, reference_features, run_python

ARCH, TAG = "byol_r18_cifar", "cifar10_200ep"


def load(hub_env, env=None, releases=None, create=None, **kwargs):
    """Per-stage feature sums of ``create()`` (default: the released tag through ``ladder_zoo.create_model``), or
    its ``WeightsError`` as the one line a user sees, with the Hub as ``env`` makes it (``hub_env``)."""
    hub_env(env, releases)
    create = create or (lambda: ladder_zoo.create_model(f"{ARCH}.{TAG}", pretrained=True, features_only=True,
                                                        **kwargs))
    try:
        model = create()
    except ladder_zoo.WeightsError as e:
        return f"{type(e).__name__}: {e}"
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return [f.double().sum().item() for f in model.eval()(x)]


def sums(state):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    return [f.double().sum().item() for f in reference_features(ARCH, state, x)]


def assert_features(result, state):
    assert isinstance(result, list), result
    assert result == pytest.approx(sums(state), rel=1e-5)


@pytest.fixture
def published(tmp_path, hub_server):
    """The tag released (sha256 on record) and served by the Hub; nothing cached, no local copy."""
    repo, folder, entry, state = make_release(tmp_path / "export", ARCH, TAG, seed=11)
    commit = hub_server.commit(repo, {p.name: p.read_bytes() for p in folder.iterdir()})
    env = {"HF_ENDPOINT": hub_server.endpoint}
    return dict(repo=repo, folder=folder, releases={repo: entry}, state=state, commit=commit, env=env)


def test_first_download_then_cache_hit_then_offline(hub_env, hub_server, published):
    p = published
    assert_features(load(hub_env, p["env"], p["releases"]), p["state"])
    assert hub_server.count("GET", "/lfs/") == 1

    hub_server.requests.clear()  # timm's hf-hub: name (ladder_zoo imported) reads the same cached copy
    timm_name = lambda: __import__("timm").create_model(f"hf-hub:{p['repo']}", pretrained=True, features_only=True)
    assert_features(load(hub_env, p["env"], p["releases"], timm_name), p["state"])
    assert hub_server.count("GET", "/lfs/") == 0, "a cached released file is read from the cache"

    hub_server.requests.clear()
    offline = {**p["env"], "HF_HUB_OFFLINE": "1"}
    assert_features(load(hub_env, offline, p["releases"]), p["state"])
    assert hub_server.requests == []


def test_offline_without_cache_says_how_to_fix(hub_env, published):
    p = published
    r = load(hub_env, {**p["env"], "HF_HUB_OFFLINE": "1"}, p["releases"])
    assert r.startswith("WeightsNotFoundError: HF_HUB_OFFLINE is set"), r
    assert f"hf download {p['repo']}" in r and "LADDER_ZOO_HUB_DIR" in r


def test_a_changed_main_is_refused_and_the_pinned_commit_loads(hub_env, tmp_path, hub_server, published):
    """main is overwritten with other bytes: the sha256 check refuses them; the released commit still loads."""
    p = published
    _, other, _, _ = make_release(tmp_path / "other", ARCH, TAG, seed=12)
    hub_server.commit(p["repo"], {q.name: q.read_bytes() for q in other.iterdir()})

    r = load(hub_env, p["env"], p["releases"])
    assert r.startswith("WeightsIntegrityError: sha256 mismatch"), r
    assert_features(load(hub_env, p["env"], p["releases"], revision=p["commit"]), p["state"])
    r = load(hub_env, p["env"], p["releases"], revision="v9.9")
    assert r.startswith("WeightsNotFoundError") and "has no revision 'v9.9'" in r, r


def test_corrupted_cache_file_is_refused(hub_env, tmp_path, published):
    p = published
    assert_features(load(hub_env, p["env"], p["releases"]), p["state"])
    blobs = sorted((tmp_path / "hf-cache").glob("models--*/blobs/*"), key=lambda b: b.stat().st_size)
    blob = blobs[-1]  # the weights, the largest blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = load(hub_env, {**p["env"], "HF_HUB_OFFLINE": "1"}, p["releases"])
    assert r.startswith("WeightsIntegrityError: sha256 mismatch") and "Delete it" in r, r


def test_hf_hub_name_unreachable_fails_at_once_then_loads_cached(hub_env, tmp_path, hub_server):
    """ladder_zoo's hf-hub: names: one clear error at once when nothing is here, the cached copy when it is."""
    repo, folder, _, state = make_release(tmp_path / "export", ARCH, TAG, seed=17)
    user_repo = "someone/my-byol"
    hub_server.commit(user_repo, {q.name: q.read_bytes() for q in folder.iterdir()})
    create = lambda: ladder_zoo.create_model(f"hf-hub:{user_repo}", pretrained=True, features_only=True)
    closed = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # port 9: refused
    start = time.monotonic()
    r = load(hub_env, closed, create=create)
    assert time.monotonic() - start < 5  # huggingface_hub alone retries for ~23 s
    assert r.startswith("WeightsNotFoundError: Could not reach the Hub at http://127.0.0.1:9 for someone/my-byol"), r
    assert "hf download someone/my-byol" in r and "LADDER_ZOO_HUB_DIR/someone/my-byol/" in r
    assert_features(load(hub_env, {"HF_ENDPOINT": hub_server.endpoint}, create=create), state)  # now cached
    hub_server.requests.clear()
    assert_features(load(hub_env, closed, create=create), state)  # the Hub gone: the cached copy
    assert hub_server.requests == []


def test_local_folder_copy_needs_no_network(hub_env, tmp_path, published):
    p = published
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "LADDER_ZOO_HUB_DIR": str(tmp_path / "export")}  # port 9: closed
    assert_features(load(hub_env, env, p["releases"]), p["state"])


def test_unrecorded_hub_repository_loads_through_hf_hub(hub_env, tmp_path, hub_server):
    """A user's own repository written by this project (no sha256 on record) loads with timm's hf-hub: name."""
    repo, folder, _, state = make_release(tmp_path / "export", ARCH, TAG, seed=13, max_shard_size="5MB")
    user_repo = "someone/my-byol"
    hub_server.commit(user_repo, {q.name: q.read_bytes() for q in folder.iterdir()})
    create = lambda: __import__("timm").create_model(f"hf-hub:{user_repo}", pretrained=True, features_only=True)
    assert_features(load(hub_env, {"HF_ENDPOINT": hub_server.endpoint}, create=create), state)
    assert hub_server.count("GET", "/lfs/") >= 2  # the shards


# --- repositories that plain timm loads ------------------------------------------------------------------------------
PLAIN_TIMM = """
import json, sys
sys.modules["ladder_zoo"] = None  # not importable: plain timm only
sys.path = [p for p in sys.path if p not in ("", {root!r})]
import timm, torch
for name in {names!r}:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    features = timm.create_model(name, pretrained=True, features_only=True).eval()
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        print(type(model).__module__, model.num_classes, json.dumps(model(x).double().sum().item()))
        print(json.dumps([f.double().sum().item() for f in features(x)]))
"""


@pytest.fixture(scope="module")
def r18_export(tmp_path_factory):
    """A short real run of byol_r18 (ResNet-18, ImageNet stem: timm's resnet18) exported in Hub layout."""
    from helpers import SAMPLE
    from train.config import load_config
    from train.export import export
    from train.pretrain import train

    root = tmp_path_factory.mktemp("r18")
    run = train(load_config(None, [
        "model=byol_r18", "method.proj_hidden=32", "method.proj_out=16", "method.pred_hidden=32", f"data.path={SAMPLE}",
        "data.image_size=32", "data.in_memory=true", "data.workers=0", "data.augment.blur_p=[0.0, 0.0]", "batch_size=8",
        "epochs=1", "max_steps=2", "optim.warmup_epochs=0", "amp=none", "channels_last=false", "device=cpu", "progress=false", "tensorboard=false",
        f"out_dir={root / 'run'}"]))
    return export(run / "last.pt", root / "hub" / "ladder-zoo" / "byol_r18.test_run")


def reference_sums(folder):
    import ladder_zoo

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model = ladder_zoo.create_model("byol_r18", checkpoint_path=folder).eval()
        features = ladder_zoo.create_model("byol_r18", checkpoint_path=folder, features_only=True).eval()
        return model(x).double().sum().item(), [f.double().sum().item() for f in features(x)]


def assert_plain_timm(result, folder, loads):
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()[-2 * loads:]
    pooled_ref, features_ref = reference_sums(folder)
    for first, second in zip(lines[::2], lines[1::2]):
        module, num_classes, pooled = first.split()
        assert module == "timm.models.resnet" and num_classes == "0"  # timm's own ResNet, no classifier
        assert float(pooled) == pytest.approx(pooled_ref, rel=1e-6)
        assert json.loads(second) == pytest.approx(features_ref, rel=1e-6)


def test_plain_timm_loads_an_export_from_a_local_folder_and_the_hub(r18_export, tmp_path, hub_server, hub_env):
    config = json.loads((r18_export / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["ladder_zoo"]["name"] == "byol_r18"
    repo = "ladder-zoo/byol_r18.test_run"
    hub_server.commit(repo, {p.name: p.read_bytes() for p in r18_export.iterdir()})
    names = [f"local-dir:{r18_export}", f"hf-hub:{repo}"]
    code = PLAIN_TIMM.format(root=str(ROOT), names=names)
    assert_plain_timm(run_python(code, tmp_path, {"HF_ENDPOINT": hub_server.endpoint}), r18_export, len(names))
    # through ladder_zoo the same repository builds the zoo model, from its ladder_zoo block
    hub_env({"HF_ENDPOINT": hub_server.endpoint})
    model = ladder_zoo.create_model(f"hf-hub:{repo}", pretrained=True, features_only=True).eval()
    assert model.pretrained_cfg["architecture"] == "byol_r18"
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert [f.double().sum().item() for f in model(x)] == pytest.approx(reference_sums(r18_export)[1], rel=1e-6)


def test_the_card_of_an_export_runs_and_its_metadata_validates(r18_export, tmp_path, capsys):
    """The usage line of a run's own export (an undeclared tag) runs as written; an evaluation added later becomes
    Hub model-index metadata that huggingface_hub reads."""
    import re

    from huggingface_hub import ModelCard, metadata_load

    from helpers import run_main
    from train.export import main as export_main

    card = (r18_export / "README.md").read_text()
    usage = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("path/to/", f"{r18_export.parent}/")
    assert "train/configs/byol_r18_test_run.yaml" not in card  # no recipe file is named for a run's own tag
    ran = {}
    exec(usage, ran)
    assert type(ran["model"]).__name__ == "FeatureListNet"
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"model": "byol_r18", "command": "python -m train.eval ...",
                                      "knn": {"k": 200, "temperature": 0.1, "accuracy": {"res4": 0.25, "res5": 0.5}},
                                      "linear": {"epochs": 100, "accuracy": {"res4": 0.3, "res5": 0.6}}}))
    folder = tmp_path / r18_export.name
    folder.mkdir()
    for p in r18_export.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    added = run_main(export_main, [str(folder), "--eval", str(evaluation)], capsys)
    assert added.returncode == 0, added.stderr
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_name: (r.metric_value, r.dataset_type, r.dataset_split) for r in card.data.eval_results}
    assert results["kNN top-1 (k=200, T=0.1), res5"] == (50.0, "imagenet-1k", "test")
    assert results["linear-probe top-1, res4"] == (30.0, "imagenet-1k", "test")
    assert metadata_load(folder / "README.md")["library_name"] == "timm"
    assert "| kNN (k=200, T=0.1) | 25.0 | 50.0 |" in card.text
