"""Weights through the real huggingface_hub client against a Hub served on 127.0.0.1 (HF_ENDPOINT).

Each load runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import.
"""
import json

import pytest
import torch

from helpers import make_release, reference_features, run_python

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
