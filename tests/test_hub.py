"""Weights through the real huggingface_hub client against a Hub served on 127.0.0.1 (HF_ENDPOINT).

Each load runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import.
"""
import json

import pytest
import torch

from helpers import ROOT, make_release, reference_features, run_python

ARCH, TAG = "byol_r18_cifar", "cifar10_200ep"
LOAD = """
import json, sys, torch, ladder_zoo
kwargs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {{}}
torch.manual_seed(0)
x = torch.randn(2, 3, 32, 32)
try:
    model = {create}
except ladder_zoo.WeightsError as e:
    print(type(e).__name__ + ": " + str(e))
    raise SystemExit(3)
with torch.no_grad():
    print(json.dumps([f.double().sum().item() for f in model.eval()(x)]))
"""


def load_code(create=f'ladder_zoo.create_model("{ARCH}.{TAG}", pretrained=True, features_only=True, **kwargs)', **kw):
    code = LOAD.format(create=create)
    return code.replace("json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}", repr(kw) if kw else "{}")


def sums(state):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    return [f.double().sum().item() for f in reference_features(ARCH, state, x)]


def assert_features(result, state):
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == pytest.approx(sums(state), rel=1e-5)


@pytest.fixture
def published(tmp_path, hub_server):
    """The tag released (sha256 on record) and served by the Hub; nothing cached, no local copy."""
    repo, folder, entry, state = make_release(tmp_path / "export", ARCH, TAG, seed=11)
    commit = hub_server.commit(repo, {p.name: p.read_bytes() for p in folder.iterdir()})
    env = {"HF_ENDPOINT": hub_server.endpoint}
    return dict(repo=repo, folder=folder, releases={repo: entry}, state=state, commit=commit, env=env)


def test_first_download_then_cache_hit_then_offline(tmp_path, hub_server, published):
    p = published
    assert_features(run_python(load_code(), tmp_path, p["env"], p["releases"]), p["state"])
    assert hub_server.count("GET", "/lfs/") == 1

    hub_server.requests.clear()
    assert_features(run_python(load_code(), tmp_path, p["env"], p["releases"]), p["state"])
    assert hub_server.count("GET", "/lfs/") == 0, "a cached released file is read from the cache"

    hub_server.requests.clear()
    offline = {**p["env"], "HF_HUB_OFFLINE": "1"}
    assert_features(run_python(load_code(), tmp_path, offline, p["releases"]), p["state"])
    assert hub_server.requests == []


def test_offline_without_cache_says_how_to_fix(tmp_path, published):
    p = published
    r = run_python(load_code(), tmp_path, {**p["env"], "HF_HUB_OFFLINE": "1"}, p["releases"])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "WeightsNotFoundError: HF_HUB_OFFLINE is set" in r.stdout
    assert f"hf download {p['repo']}" in r.stdout and "LADDER_ZOO_HUB_DIR" in r.stdout


def test_pinned_revision_and_changed_main(tmp_path, hub_server, published):
    """main is overwritten with other bytes: the sha256 check refuses them; the released commit still loads."""
    p = published
    _, other, _, _ = make_release(tmp_path / "other", ARCH, TAG, seed=12)
    hub_server.commit(p["repo"], {q.name: q.read_bytes() for q in other.iterdir()})

    r = run_python(load_code(), tmp_path, p["env"], p["releases"])
    assert r.returncode == 3 and "WeightsIntegrityError: sha256 mismatch" in r.stdout, r.stdout + r.stderr

    pinned = load_code(revision=p["commit"])
    assert_features(run_python(pinned, tmp_path, p["env"], p["releases"]), p["state"])

    r = run_python(load_code(revision="v9.9"), tmp_path, p["env"], p["releases"])
    assert r.returncode == 3 and "has no revision 'v9.9'" in r.stdout, r.stdout + r.stderr


def test_corrupted_cache_file_is_refused(tmp_path, published):
    p = published
    assert_features(run_python(load_code(), tmp_path, p["env"], p["releases"]), p["state"])
    blobs = sorted((tmp_path / "hf-cache").glob("models--*/blobs/*"), key=lambda b: b.stat().st_size)
    blob = blobs[-1]  # the weights, the largest blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = run_python(load_code(), tmp_path, {**p["env"], "HF_HUB_OFFLINE": "1"}, p["releases"])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "WeightsIntegrityError: sha256 mismatch" in r.stdout and "Delete it" in r.stdout


def test_timm_hf_hub_name(tmp_path, published):
    p = published
    create = f'__import__("timm").create_model("hf-hub:{p["repo"]}", pretrained=True, features_only=True)'
    assert_features(run_python(load_code(create), tmp_path, p["env"], p["releases"]), p["state"])


def test_hf_hub_name_with_the_hub_unreachable(tmp_path, hub_server):
    """ladder_zoo's hf-hub: names: one clear error at once when nothing is here, the cached copy when it is."""
    import time

    repo, folder, _, state = make_release(tmp_path / "export", ARCH, TAG, seed=17)
    user_repo = "someone/my-byol"
    hub_server.commit(user_repo, {q.name: q.read_bytes() for q in folder.iterdir()})
    create = f'ladder_zoo.create_model("hf-hub:{user_repo}", pretrained=True, features_only=True)'
    closed = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # port 9: refused
    start = time.monotonic()
    r = run_python(load_code(create), tmp_path, closed)
    assert r.returncode == 3 and time.monotonic() - start < 15  # huggingface_hub alone retries for ~23 s
    assert r.stdout.startswith("WeightsNotFoundError: Could not reach the Hub at http://127.0.0.1:9 for someone/my-byol")
    assert "hf download someone/my-byol" in r.stdout and "LADDER_ZOO_HUB_DIR/someone/my-byol/" in r.stdout
    assert_features(run_python(load_code(create), tmp_path, {"HF_ENDPOINT": hub_server.endpoint}), state)  # cached
    hub_server.requests.clear()
    assert_features(run_python(load_code(create), tmp_path, closed), state)  # the Hub gone: the cached copy


def test_local_folder_copy_needs_no_network(tmp_path, published):
    p = published
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "LADDER_ZOO_HUB_DIR": str(tmp_path / "export")}  # port 9: closed
    assert_features(run_python(load_code(), tmp_path, env, p["releases"]), p["state"])


def test_unrecorded_hub_repository_loads_through_hf_hub(tmp_path, hub_server):
    """A user's own repository written by this project (no sha256 on record) loads with timm's hf-hub: name."""
    repo, folder, _, state = make_release(tmp_path / "export", ARCH, TAG, seed=13, max_shard_size="5MB")
    user_repo = "someone/my-byol"
    hub_server.commit(user_repo, {q.name: q.read_bytes() for q in folder.iterdir()})
    create = f'__import__("timm").create_model("hf-hub:{user_repo}", pretrained=True, features_only=True)'
    assert_features(run_python(load_code(create), tmp_path, {"HF_ENDPOINT": hub_server.endpoint}), state)
    assert hub_server.count("GET", "/lfs/") >= 2  # the shards


# --- repositories that plain timm loads ------------------------------------------------------------------------------
PLAIN_TIMM = """
import json, sys
sys.modules["ladder_zoo"] = None  # not importable: plain timm only
sys.path = [p for p in sys.path if p not in ("", {root!r})]
import timm, torch
torch.manual_seed(0)
x = torch.randn(2, 3, 64, 64)
features = timm.create_model({name!r}, pretrained=True, features_only=True).eval()
model = timm.create_model({name!r}, pretrained=True).eval()
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


def assert_plain_timm(result, folder):
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = result.stdout.strip().splitlines()[-2:]
    module, num_classes, pooled = first.split()
    pooled_ref, features_ref = reference_sums(folder)
    assert module == "timm.models.resnet" and num_classes == "0"  # timm's own ResNet, no classifier
    assert float(pooled) == pytest.approx(pooled_ref, rel=1e-6)
    assert json.loads(second) == pytest.approx(features_ref, rel=1e-6)


def test_plain_timm_loads_an_export_from_a_local_folder(r18_export, tmp_path):
    config = json.loads((r18_export / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["ladder_zoo"]["name"] == "byol_r18"
    code = PLAIN_TIMM.format(root=str(ROOT), name=f"local-dir:{r18_export}")
    assert_plain_timm(run_python(code, tmp_path, {"HF_ENDPOINT": "http://127.0.0.1:9"}), r18_export)


def test_plain_timm_loads_an_export_from_the_hub(r18_export, tmp_path, hub_server):
    repo = "ladder-zoo/byol_r18.test_run"
    hub_server.commit(repo, {p.name: p.read_bytes() for p in r18_export.iterdir()})
    env = {"HF_ENDPOINT": hub_server.endpoint}
    assert_plain_timm(run_python(PLAIN_TIMM.format(root=str(ROOT), name=f"hf-hub:{repo}"), tmp_path, env), r18_export)
    # through ladder_zoo the same repository builds the zoo model, from its ladder_zoo block
    code = f"""
import json, torch, ladder_zoo
torch.manual_seed(0)
x = torch.randn(2, 3, 64, 64)
model = ladder_zoo.create_model("hf-hub:{repo}", pretrained=True, features_only=True).eval()
print(model.pretrained_cfg["architecture"])
with torch.no_grad():
    print(json.dumps([f.double().sum().item() for f in model(x)]))
"""
    result = run_python(code, tmp_path, env)
    assert result.returncode == 0, result.stderr
    name, sums = result.stdout.strip().splitlines()[-2:]
    assert name == "byol_r18" and json.loads(sums) == pytest.approx(reference_sums(r18_export)[1], rel=1e-6)


def test_the_card_of_an_export_runs_and_its_metadata_validates(r18_export, tmp_path):
    """The usage line of a run's own export (an undeclared tag) runs as written; an evaluation added later becomes
    Hub model-index metadata that huggingface_hub reads."""
    import re
    import subprocess
    import sys

    from huggingface_hub import ModelCard, metadata_load

    card = (r18_export / "README.md").read_text()
    usage = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("path/to/", f"{r18_export.parent}/")
    assert "train/configs/byol_r18_test_run.yaml" not in card  # no recipe file is named for a run's own tag
    ran = run_python(usage + "\nprint(type(model).__name__)", tmp_path)
    assert ran.returncode == 0 and ran.stdout.strip() == "FeatureListNet", ran.stderr
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"model": "byol_r18", "command": "python -m train.eval ...",
                                      "knn": {"k": 200, "temperature": 0.1, "accuracy": {"res4": 0.25, "res5": 0.5}},
                                      "linear": {"epochs": 100, "accuracy": {"res4": 0.3, "res5": 0.6}}}))
    folder = tmp_path / r18_export.name
    folder.mkdir()
    for p in r18_export.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    added = subprocess.run([sys.executable, "-m", "train.export", str(folder), "--eval", str(evaluation)], cwd=ROOT,
                           capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_name: (r.metric_value, r.dataset_type, r.dataset_split) for r in card.data.eval_results}
    assert results["kNN top-1 (k=200, T=0.1), res5"] == (50.0, "imagenet-1k", "test")
    assert results["linear-probe top-1, res4"] == (30.0, "imagenet-1k", "test")
    assert metadata_load(folder / "README.md")["library_name"] == "timm"
    assert "| kNN (k=200, T=0.1) | 25.0 | 50.0 |" in card.text
