"""examples/gpu/draw.py --tiny, then examples/gpu/collect.py, end to end on the CPU: every stage of a GPU draw
(stack, speed probe, two runs at once, registered export, evaluation, the pack split into parts) and of its
collection (parts and sha256 checked, Hub folders, release record, results, queue, README table), into temporary
folders only: the checkout's hub/, release record and queue are never written."""
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

import ladder_zoo
from helpers import ROOT, environ_without_hub

_spec = importlib.util.spec_from_file_location("collect", ROOT / "examples" / "gpu" / "collect.py")
collect = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect)

RELEASES = ["byol_r18_cifar.lightly_cifar10_200ep", "ladder_byol_r18_cifar.lightly_cifar10_200ep"]  # queued 1st, 2nd
CHECKOUT = [ROOT / "ladder_zoo" / "releases.json", ROOT / "examples" / "gpu" / "queue.yaml"]


def fingerprint():
    files = [*CHECKOUT, *sorted((ROOT / "hub").rglob("*"))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in files}


@pytest.fixture(scope="module")
def returned(tmp_path_factory):
    """The files a --tiny draw leaves in its --out, and what it printed."""
    tmp = tmp_path_factory.mktemp("draw")
    before = fingerprint()
    env = environ_without_hub()
    result = subprocess.run([sys.executable, "examples/gpu/draw.py", "--out", str(tmp / "out"), "--tiny", "--work",
                             str(tmp / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert fingerprint() == before
    return tmp / "out", result.stdout


def collect_into(tmp_path, monkeypatch, out, *extra):
    """collect.py's main on ``out``, every destination under ``tmp_path``."""
    monkeypatch.setenv("LADDER_ZOO_RELEASES", str(tmp_path / "releases.json"))
    monkeypatch.setenv("LADDER_ZOO_HUB_DIR", str(tmp_path / "hub"))
    queue, readme = tmp_path / "queue.yaml", tmp_path / "README.md"
    shutil.copy(ROOT / "examples" / "gpu" / "queue.yaml", queue)
    readme.write_text("# r\n<!-- releases:start -->\nold\n<!-- releases:end -->\n")
    return collect.main([str(out), "--hub-root", str(tmp_path / "hub"), "--queue", str(queue), "--results",
                         str(tmp_path / "results"), "--readme", str(readme), *extra])


def test_the_draw_returns_at_most_8_files_within_the_limits(returned):
    out, printed = returned
    files = sorted(out.iterdir())
    assert 2 <= len(files) <= 8 and all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert all(f.stat().st_size <= 15 * 2**20 for f in files) and sum(f.stat().st_size for f in files) <= 64 * 2**20
    assert [f.name for f in files] == [f"draw.tar.part{i:02d}" for i in range(len(files) - 1)] + ["summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert "failed: nothing" in summary and summary.count("evaluated") == 2, summary
    assert printed.rstrip().endswith(summary.rstrip())  # the summary table is printed last


def test_collect_installs_the_verified_releases(returned, tmp_path, monkeypatch, capsys):
    before = fingerprint()
    assert collect_into(tmp_path, monkeypatch, returned[0]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "releases.json").read_text())
    assert sorted(record) == [f"ladder-zoo/{r}" for r in RELEASES]
    for name in RELEASES:
        folder = tmp_path / "hub" / "ladder-zoo" / name
        entry = record[f"ladder-zoo/{name}"]
        assert {p.name for p in folder.iterdir()} == set(entry["files"])  # 15 MB shards: the weights in two
        assert "model.safetensors.index.json" in entry["files"] and "knn" in entry["evaluation"]
        assert "## Evaluation" in (folder / "README.md").read_text()
        model = ladder_zoo.create_model(name.split(".")[0], checkpoint_path=folder, features_only=True).eval()
        with torch.no_grad():
            assert len(model(torch.randn(1, 3, 32, 32))) == 5
    results = next((tmp_path / "results").iterdir())
    assert results.name.startswith("cpu_") and {"speed.json", "draw.json", "README.md", f"{RELEASES[0]}.json"} <= {
        p.name for p in results.iterdir()}
    speed = json.loads((results / "speed.json").read_text())
    assert speed["probe"]["eager"]["img_per_s"] > 0 and speed["finished"] == RELEASES
    assert any(p.name.endswith(".log.jsonl") for p in (results / "logs").iterdir())
    queue = (tmp_path / "queue.yaml").read_text()
    assert queue.count("status: released") == 2 and queue.count("status: queued") == 6
    assert RELEASES[0] in (tmp_path / "README.md").read_text() and "git add" in printed
    assert collect_into(tmp_path, monkeypatch, returned[0]) == 0  # again: the same results folder
    assert len(list((tmp_path / "results").iterdir())) == 1
    assert fingerprint() == before


def test_collect_stops_at_a_missing_or_damaged_part(returned, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(returned[0], out)
    (out / "draw.tar.part01").unlink()
    assert collect_into(tmp_path, monkeypatch, out) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "draw.tar.part01 is missing" in error
    shutil.copy(returned[0] / "draw.tar.part01", out)
    with open(out / "draw.tar.part00", "r+b") as f:
        f.seek(10_000)
        f.write(b"\0" * 8)
    assert collect_into(tmp_path, monkeypatch, out) == 1
    assert "draw.tar.part00 is damaged" in capsys.readouterr().err
    assert not (tmp_path / "hub").exists() and not (tmp_path / "releases.json").exists()


def test_collect_checks_each_file_against_the_returned_record(returned, tmp_path):
    draw = collect.unpack(collect.read_parts(returned[0]), tmp_path)
    shard = sorted((draw / "hub" / "ladder-zoo" / RELEASES[1]).glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    with pytest.raises(collect.CollectError, match=f"{RELEASES[1]}/{shard.name}: sha256 .* differs"):
        collect.verify(draw)


def test_a_tiny_draw_is_never_collected_into_the_checkout(returned, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LADDER_ZOO_RELEASES", str(tmp_path / "releases.json"))
    assert collect.main([str(returned[0])]) == 1
    assert "a --tiny draw is no release" in capsys.readouterr().err
