"""train.pretrain end to end on the CPU: exact resume after kill -9, export -> create_model round trip and the
push to a served Hub, the NaN guard, unreadable images, every recipe. Multi-process groups (2-process DDP equal to
one process, SyncBatchNorm's control, preemption): tests/test_reliability.py."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import ladder_zoo
from helpers import ROOT, SAMPLE, TINY_MODEL, TINY_RUN, TINY_STEPS, flatten, run_main
from train.checkpoint import load_ssl_checkpoint
from train.config import load_config
from train.pretrain import TrainingDiverged, train

def pretrain(out_dir, *overrides, check=True, **popen):
    """``python -m train.pretrain`` on TINY_RUN in a process of its own (where a process boundary is the point: a
    kill, a resume in a new process); 2-process groups are tests/test_reliability.py's."""
    cmd = [sys.executable, "-m", "train.pretrain", *TINY_RUN, f"out_dir={out_dir}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, **popen)
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def export_cli(argv, capsys):
    """``python -m train.export ARGV``, in this process."""
    from train.export import main

    return run_main(main, argv, capsys)


def weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    pretrain(run_dir, "checkpoint_every=3")
    return run_dir


def test_run_logs_levels_and_collapse_monitor(uninterrupted):
    records = [json.loads(line) for line in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, TINY_STEPS + 1))
    last = records[-1]
    for level in ("res2", "res3", "res4", "res5"):
        assert f"loss/{level}" in last and 0 < last[f"std/{level}"] < 1
    assert records[-1]["loss"] < records[0]["loss"]
    ckpt = load_ssl_checkpoint(uninterrupted / "last.pt")
    assert ckpt.step == TINY_STEPS and ckpt.data["epoch"] == 2 and ckpt.optimizer["state"]
    assert {"backbone.conv1.weight", "target_backbone.conv1.weight", "predictors.res2.global.0.weight"} <= set(ckpt.model)


def test_kill_and_resume_ends_with_the_same_weights(uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    proc = pretrain(run_dir, "checkpoint_every=3", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(run_dir / "last.pt", weights_only=True)["step"]
    assert step < TINY_STEPS, "the run was to be killed before its end"
    pretrain(run_dir, "checkpoint_every=3")  # resume=auto
    resumed, whole = weights(run_dir), weights(uninterrupted)
    assert resumed["step"] == TINY_STEPS
    for key in ("model", "optimizer"):
        flat_a, flat_b = flatten(resumed[key]), flatten(whole[key])
        assert flat_a.keys() == flat_b.keys()
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), key
    log_steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log_steps[step - TINY_STEPS:] == list(range(step + 1, TINY_STEPS + 1))


def test_resume_refuses_another_recipe(uninterrupted, tmp_path, capsys):
    from train.pretrain import main

    run_dir = tmp_path / "other"
    shutil.copytree(uninterrupted, run_dir)
    result = run_main(main, [*TINY_RUN, f"out_dir={run_dir}", "optim.lr=0.5"], capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("train.pretrain: error: ") and "optim.lr: 1.0 -> 0.5" in result.stderr


def test_export_loads_back_as_the_trained_backbone(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "hub" / "ladder-zoo" / f"{TINY_MODEL}.cifar10_200ep"
    result = export_cli([str(uninterrupted / "last.pt"), "--out", str(out), "--dtype", "fp32"], capsys)
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "model.safetensors.index.json").read_text())  # fp32 ResNet-18 (45 MB): sharded
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and {p.name for p in out.iterdir()} == {
        "config.json", "README.md", "model.safetensors.index.json", *shards}
    assert all(p.stat().st_size < 25_000_000 for p in out.iterdir())
    card = (out / "README.md").read_text()
    assert f"exported after step {TINY_STEPS}" in card and "levels `G G G G`" in card
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == TINY_MODEL and config["ladder_zoo"]["step"] == TINY_STEPS

    monkeypatch.setenv("LADDER_ZOO_HUB_DIR", str(tmp_path / "hub"))
    exported = ladder_zoo.create_model(f"{TINY_MODEL}.cifar10_200ep", pretrained=True, features_only=True).eval()
    trained = ladder_zoo.create_model(TINY_MODEL, features_only=True).eval()
    trained.load_state_dict(load_ssl_checkpoint(uninterrupted / "last.pt").backbone_state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(exported(x), trained(x)):
            assert torch.equal(a, b)


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from train.model import LadderSiamese

    forward, calls = LadderSiamese.forward, []

    def poisoned(self, views):
        out = forward(self, views)
        calls.append(1)
        if len(calls) > 4:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(LadderSiamese, "forward", poisoned)
    cfg = load_config(None, [*TINY_RUN, f"out_dir={tmp_path}", "checkpoint_every=2"])
    with pytest.raises(TrainingDiverged, match=f"between steps 4 and 5; the last good checkpoint is {tmp_path}"):
        train(cfg)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 4


def test_unreadable_image_is_reported_and_training_goes_on(tmp_path, capsys):
    from train.pretrain import main

    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "train", data)
    bad = sorted(data.glob("dog/*.jpg"))[1]
    bad.write_bytes(b"\x00" * 64)
    result = run_main(main, [*TINY_RUN, f"out_dir={tmp_path / 'run'}", f"data.path={data}", "data.split=",
                             "data.in_memory=false", "max_steps=5"], capsys)
    assert result.returncode == 0, result.stderr
    assert f"skipped unreadable images (replaced by the next readable one): dog/{bad.name}" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["bad_images"] == 1 and records[-1]["step"] == 5


CIFAR_RECIPES = sorted((ROOT / "train" / "configs").glob("*_cifar10_200ep.yaml"))
SMALL = ["method.proj_hidden=64", "method.proj_out=32", "method.pred_hidden=32", "method.dense_hidden=32",
         "method.dense_out=16", "batch_size=8", f"data.path={SAMPLE}", "data.split=train", "data.workers=0",
         "device=cpu", "progress=false", "tensorboard=false", "max_steps=2", "log_every=1", "amp=none",
         "channels_last=false"]


@pytest.mark.parametrize("recipe", CIFAR_RECIPES, ids=lambda p: p.stem)
def test_every_cifar_recipe_trains(recipe, tmp_path):
    from timm.models import get_pretrained_cfg

    fixed = get_pretrained_cfg(load_config(str(recipe)).model).fixed_input_size  # a ViT's grid: its own 32 px
    run_dir = train(load_config(str(recipe), [*SMALL, *([] if fixed else ["data.image_size=16"]), f"out_dir={tmp_path}"]))
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


def test_imagenet_recipe_trains_on_jpeg_files_in_bf16_channels_last(tmp_path):
    """An R50 ImageNet recipe at 32 px on JPEG files: the GPU pipeline's file path (decode per batch), bf16
    autocast, channels_last and TensorBoard, on the CPU; then the CPU pipeline with two DataLoader workers."""
    recipe = str(ROOT / "train" / "configs" / "ladder_densebyol_r50_in1k_200ep.yaml")
    overrides = [*SMALL, "amp=bf16", "channels_last=true", "tensorboard=true", "data.image_size=32", "batch_size=4"]
    run_dir = train(load_config(recipe, [*overrides, f"out_dir={tmp_path / 'gpu'}"]))
    assert list((run_dir / "tb").iterdir()) and (run_dir / "last.pt").is_file()
    run_dir = train(load_config(recipe, [*overrides, "data.pipeline=cpu", "data.workers=2", f"out_dir={tmp_path / 'cpu'}"]))
    assert json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_zoo_model_must_train_with_its_declared_normalisation(tmp_path):
    cfg = load_config(None, [*TINY_RUN, f"out_dir={tmp_path}", "data.mean=[0.485, 0.456, 0.406]"])
    with pytest.raises(ValueError, match=r"data.mean=\[0.485, 0.456, 0.406\] differs from ladder_byol_r18_cifar's"):
        train(cfg)


def test_export_pushes_to_the_hub_and_the_push_loads(uninterrupted, tmp_path, hub_server, hub_env, capsys):
    """--push-to-hub through huggingface_hub's create_repo / upload_folder (LFS path) to the served Hub; the
    pushed repository then loads, sha256-checked, at the commit the push made."""
    from ladder_zoo.publish import record_release

    out = tmp_path / "hub" / "ladder-zoo" / f"{TINY_MODEL}.cifar10_200ep"
    hub_env({"HF_ENDPOINT": hub_server.endpoint, "HF_TOKEN": "hf_local_test", "HF_HUB_DISABLE_XET": "1"})
    result = export_cli([str(uninterrupted / "last.pt"), "--out", str(out), "--push-to-hub"], capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    repo = f"ladder-zoo/{TINY_MODEL}.cifar10_200ep"
    commit = hub_server.repos[repo]["refs"]["main"]
    assert f"pushed to {repo} @ {commit}" in result.stdout
    assert hub_server.repos[repo]["commits"][commit] == {p.name: p.read_bytes() for p in out.iterdir()}
    assert hub_server.count("PUT", "/lfs-upload/") == 1  # the weights went through LFS

    hub_server.requests.clear()
    hub_env({"HF_ENDPOINT": hub_server.endpoint}, {repo: {**record_release(out), "revision": commit}})
    loaded = ladder_zoo.create_model(f"{TINY_MODEL}.cifar10_200ep", pretrained=True).layer4[1].conv2.weight
    expected = load_ssl_checkpoint(uninterrupted / "last.pt").backbone_state_dict()["layer4.1.conv2.weight"]
    assert torch.equal(loaded, expected.half().float())  # exported as fp16 (export's default)
    assert hub_server.count("GET", f"/{repo}/resolve/{commit}/") + hub_server.count("HEAD", f"/{repo}/resolve/{commit}/") >= 1


def test_register_release_records_every_file(tmp_path, monkeypatch):
    from ladder_zoo import hub
    from ladder_zoo.publish import register_release

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    table = tmp_path / "releases.json"
    table.write_text("{}")
    monkeypatch.setenv(hub.RELEASES_ENV, str(table))
    entry = register_release("ladder-zoo/x.y", folder, revision="abc")
    assert json.loads(table.read_text()) == {"ladder-zoo/x.y": entry}
    assert entry["files"]["model.safetensors"] == hub.sha256_file(folder / "model.safetensors")
    assert hub.is_published("ladder-zoo/x.y")


def test_any_run_exports_but_only_finished_recipe_runs_register(uninterrupted, tmp_path, capsys):
    from ladder_zoo import hub

    before = hub.DEFAULT_RELEASES.read_bytes()
    out = tmp_path / "export" / f"{TINY_MODEL}.my-test_20steps"
    ok = export_cli([str(uninterrupted / "last.pt"), "--out", str(out)], capsys)
    assert ok.returncode == 0, ok.stderr
    by_path = ladder_zoo.create_model(TINY_MODEL, checkpoint_path=str(out), features_only=True).eval()
    trained = ladder_zoo.create_model(TINY_MODEL, features_only=True).eval()
    state = load_ssl_checkpoint(uninterrupted / "last.pt").backbone_state_dict()
    trained.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(by_path(x), trained(x)):
            assert torch.equal(a, b)  # the fp16 export holds exactly the fp16-rounded trained weights
    for name, message in [("my-test_20steps", "--register records release tags only"),
                          ("cifar10_200ep", "--register records finished runs of train/configs/")]:
        refused = export_cli([str(uninterrupted / "last.pt"), "--out", str(tmp_path / "r" / f"{TINY_MODEL}.{name}"),
                              "--register"], capsys)
        assert refused.returncode == 2 and message in refused.stderr.splitlines()[-1]
        assert "Traceback" not in refused.stderr and not (tmp_path / "r").exists()
    shortened = tmp_path / "shortened"  # the recipe's name, finished, but 2 of its 200 epochs
    train(load_config(None, [*TINY_RUN, f"out_dir={shortened}", f"name={TINY_MODEL}_cifar10_200ep"]))
    refused = export_cli([str(shortened / "last.pt"), "--out", str(tmp_path / "r" / f"{TINY_MODEL}.cifar10_200ep"),
                          "--register"], capsys)
    assert refused.returncode == 2 and "(2 epochs, the recipe's 200)" in refused.stderr.splitlines()[-1]
    missing = export_cli([str(tmp_path / "nope.pt"), "--out", str(out)], capsys)
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr.splitlines()[-1]
    assert hub.DEFAULT_RELEASES.read_bytes() == before  # the tracked releases.json is never touched by a test run


def test_an_exported_folder_gets_its_evaluation_later(uninterrupted, tmp_path, capsys):
    """An evaluation that ran after the export (the checkpoint gone): card and config.json get it, the weights are
    untouched; a second one replaces the first; another model's evaluation and --register of a folder that is no
    release are one-line errors."""
    from ladder_zoo import hub

    before = hub.DEFAULT_RELEASES.read_bytes()
    out = tmp_path / f"{TINY_MODEL}.mine"
    assert export_cli([str(uninterrupted / "last.pt"), "--out", str(out)], capsys).returncode == 0
    weights_before = (out / "model.safetensors").read_bytes()
    for accuracy in (0.5, 0.75):
        evaluation = tmp_path / "eval.json"
        evaluation.write_text(json.dumps({"model": TINY_MODEL, "knn": {"accuracy": {"res5": accuracy}}}))
        added = export_cli([str(out), "--eval", str(evaluation)], capsys)
        assert added.returncode == 0, added.stderr
        assert f"added {evaluation} to {out}" in added.stdout
    card = (out / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "| kNN (k=?, T=?) | 75.0 |" in card and "## Training" in card
    assert json.loads((out / "config.json").read_text())["ladder_zoo"]["evaluation"]["knn"]["accuracy"]["res5"] == 0.75
    assert (out / "model.safetensors").read_bytes() == weights_before
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "byol_r18_cifar"}))
    for args, message in [(["--eval", str(other)], f"evaluates 'byol_r18_cifar', not {out}'s {TINY_MODEL}"),
                          ([], "is an exported folder: name the evaluation to add to it, --eval EVAL.json"),
                          (["--eval", str(evaluation), "--register"], "re-records a release, and ")]:
        refused = export_cli([str(out), *args], capsys)
        assert refused.returncode == 2 and message in refused.stderr.splitlines()[-1], refused.stderr
    assert hub.DEFAULT_RELEASES.read_bytes() == before


def test_weights_load_only_as_the_name_they_were_trained_as(uninterrupted, tmp_path, capsys):
    from ladder_zoo.errors import WeightsMismatchError

    with pytest.raises(WeightsMismatchError, match=f"trained as {TINY_MODEL}, not simsiam_r18_cifar: load them as "
                                                    f"create_model\\('{TINY_MODEL}'"):
        ladder_zoo.create_model("simsiam_r18_cifar", checkpoint_path=uninterrupted / "last.pt")
    out = tmp_path / f"{TINY_MODEL}.mine"
    assert export_cli([str(uninterrupted / "last.pt"), "--out", str(out)], capsys).returncode == 0
    with pytest.raises(WeightsMismatchError, match=f"trained as {TINY_MODEL}, not byol_r18_cifar"):
        ladder_zoo.create_model("byol_r18_cifar", checkpoint_path=out, features_only=True)
    ladder_zoo.create_model(TINY_MODEL, checkpoint_path=out / "model.safetensors", features_only=True)
