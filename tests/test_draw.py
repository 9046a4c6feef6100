"""examples/gpu/draw.py --tiny as its two device calls, then examples/gpu/collect.py, end to end on the CPU: call 1
starts the draw's own process and is killed (as the device tool kills a command at its limit) once the draw has
started its runs, leaving a readable provisional record; the draw goes on; call 2 waits for its end and returns
the pack (stack, speed probe, two runs at once, registered export, evaluation, the pack split into parts);
collect.py checks and installs it (parts and sha256, Hub folders, release record, results, queue, README table),
into temporary folders only: the checkout's hub/, release record and queue are never written. Then each part of
the draw alone: the judge's near miss, the release stages ended before the pack, the pack's guards, the calls'
mirror of the record into $OUT, and the plan that docs/performance.md states."""
import hashlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import torch

import ladder_zoo
from helpers import ROOT, environ_without_hub

sys.path.insert(0, str(ROOT / "examples" / "gpu"))  # draw.py's parts import each other as the script does
import draw  # noqa: E402
import draw_pack  # noqa: E402
from draw_plan import GPU, TINY, Clock, Entry, H100Figures, Journal  # noqa: E402
from draw_release import Releaser  # noqa: E402
from draw_runs import Judge, Run  # noqa: E402

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
    """(call 2's $OUT, what call 2 printed, call 1's $OUT) of a --tiny draw, call 1 killed mid-draw."""
    tmp = tmp_path_factory.mktemp("draw")
    before = fingerprint()
    env = environ_without_hub()
    command = [sys.executable, "examples/gpu/draw.py", "--tiny", "--work", str(tmp / "work")]
    call1 = subprocess.Popen([*command, "--start", "--out", str(tmp / "out1")], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    speed = tmp / "out1" / "speed.json"
    while not (speed.is_file() and json.loads(speed.read_text())["runs"][1:]) and call1.poll() is None:
        time.sleep(0.1)  # until a run has started beside the probe: the record after the stack check is there
    assert call1.poll() is None, call1.stdout.read().decode()[-3000:]
    call1.kill()  # as the device tool ends a command at its limit: SIGKILL, no clean-up
    call1.wait()
    call1.stdout.close()
    result = subprocess.run([*command, "--finish", "--out", str(tmp / "out2")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert fingerprint() == before
    return tmp / "out2", result.stdout, tmp / "out1"


def collect_into(tmp_path, monkeypatch, out, *extra):
    """collect.py's main on ``out``, every destination under ``tmp_path``."""
    monkeypatch.setenv("LADDER_ZOO_RELEASES", str(tmp_path / "releases.json"))
    monkeypatch.setenv("LADDER_ZOO_HUB_DIR", str(tmp_path / "hub"))
    queue, readme = tmp_path / "queue.yaml", tmp_path / "README.md"
    shutil.copy(ROOT / "examples" / "gpu" / "queue.yaml", queue)
    readme.write_text("# r\n<!-- releases:start -->\nold\n<!-- releases:end -->\n")
    return collect.main([str(out), "--hub-root", str(tmp_path / "hub"), "--queue", str(queue), "--results",
                         str(tmp_path / "results"), "--readme", str(readme), "--compile-cache",
                         str(tmp_path / "compile_cache"), *extra])


def test_call_1_killed_at_its_limit_leaves_a_readable_record(returned):
    record = returned[2]
    assert sorted(p.name for p in record.iterdir() if not p.name.startswith(".")) == ["speed.json", "summary.txt"]
    speed = json.loads((record / "speed.json").read_text())
    assert speed["provisional"] and speed["stack"]["python"] and speed["runs"][1]["status"] == "running"
    summary = (record / "summary.txt").read_text()
    assert "PROVISIONAL" in summary.splitlines()[0] and "stack: python" in summary


def test_the_draw_returns_at_most_8_files_within_the_limits(returned):
    out, printed, _ = returned
    files = sorted(out.iterdir())
    assert 3 <= len(files) <= 8 and all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert all(f.stat().st_size <= 15 * 2**20 for f in files) and sum(f.stat().st_size for f in files) <= 64 * 2**20
    parts = [f"draw.tar.part{i:02d}" for i in range(len(files) - 2)]
    assert [f.name for f in files] == [*parts, "speed.json", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert "failed: nothing" in summary and summary.count("evaluated") == 2, summary
    assert "provisional" not in json.loads((out / "speed.json").read_text())
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


def test_a_bad_folder_costs_that_folder_only(returned, tmp_path, monkeypatch, capsys):
    """One shard of the second release differs from its record entry: collect installs the first, names the
    second, and exits 1."""
    (tmp_path / "unpacked").mkdir()
    draw_dir = collect.unpack(collect.read_parts(returned[0]), tmp_path / "unpacked")
    shard = sorted((draw_dir / "hub" / "ladder-zoo" / RELEASES[1]).glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    out = tmp_path / "out"
    repack(draw_dir, out)
    assert collect_into(tmp_path, monkeypatch, out) == 1
    printed = capsys.readouterr().out
    assert f"NOT installed: ladder-zoo/{RELEASES[1]}: {shard.name}: sha256" in printed
    assert sorted(json.loads((tmp_path / "releases.json").read_text())) == [f"ladder-zoo/{RELEASES[0]}"]
    assert [p.name for p in (tmp_path / "hub" / "ladder-zoo").iterdir()] == [RELEASES[0]]


def repack(draw_dir, out):
    """A draw folder as draw_pack returns it: one part and a summary.txt naming it."""
    out.mkdir()
    files = sorted(p for p in draw_dir.rglob("*") if p.is_file())
    data = draw_pack._tar([(str(p.relative_to(draw_dir)), p.read_bytes()) for p in files])
    (out / "draw.tar.part00").write_bytes(data)
    digest = draw_pack.sha256(out / "draw.tar.part00")
    (out / "summary.txt").write_text(f"x\n\npart draw.tar.part00 {len(data)} {digest}\n")


def test_a_tiny_draw_is_never_collected_into_the_checkout(returned, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LADDER_ZOO_RELEASES", str(tmp_path / "releases.json"))
    assert collect.main([str(returned[0])]) == 1
    assert "a --tiny draw is no release" in capsys.readouterr().err


# --- each part alone ------------------------------------------------------------------------------------------------
class Process:
    """A training process that has not ended: what Run.stop signals."""

    def __init__(self):
        self.signals = []

    def send_signal(self, sig):
        self.signals.append(sig)


def judged(seconds_in, steps_left, img_per_s, setting=GPU):
    """A lone run ``seconds_in`` seconds after call 1 began, ``steps_left`` steps from its end at ``img_per_s``
    in its last windows alone, and the Judge that judged it."""
    clock = Clock(setting, t0=time.monotonic() - seconds_in)
    journal = Journal(clock, {"failures": []})
    judge = Judge(setting, clock, journal)
    entry = Entry(0, "r.yaml", 0, "byol_x", "byol", "x", 200, 512, total_steps=19_400)
    run = Run(entry, "reduce-overhead", ROOT / "runs" / "none", "byol_x.reduce-overhead")
    run.proc, run.status, run.confirmed = Process(), "running", True
    step = entry.total_steps - steps_left
    run.records = [{"step": step - 50 * (5 - i), "img_per_s": img_per_s, "alone": True, "t": 0.0} for i in range(5)]
    judge.runs.append(run)
    judge.judge([run])
    return judge, run, journal


def test_a_lone_run_finishing_after_the_evaluation_window_goes_on_to_be_exported():
    clock = Clock(GPU, t0=0.0)
    seconds = (clock.eval_by + clock.finish_by) / 2 - 400  # 400 s in: it finishes between the two deadlines
    judge, run, journal = judged(400, int(seconds * 20_000 / 512), 20_000)
    assert run.status == "running" and run.late and "evaluated on the CPU later" in journal.lines[-1]
    judge, run, _ = judged(400, int((clock.finish_by - 400 + 30) * 20_000 / 512), 20_000)  # 30 s too late
    assert run.status == "stopping" and run.proc.signals and run.note.startswith("cannot finish")


def test_a_run_that_cannot_finish_is_not_started():
    """Alone, a run starts if it can finish before it can no longer be exported (after the evaluation window it
    is exported and registered only); measured at 15,000 img/s it cannot."""
    clock = Clock(GPU, t0=time.monotonic() - 10)
    judge = Judge(GPU, clock, Journal(clock, {"failures": []}))
    entry = Entry(0, "r.yaml", 0, "byol_x", "byol", "x", 200, 512, total_steps=19_400)
    measured = Run(entry, "reduce-overhead", ROOT / "runs" / "none", "byol_x.reduce-overhead")
    measured.started, measured.status = 0.0, "finished"
    judge.runs.append(measured)
    for speed, verdict in ((20_000, "start"), (17_500, "start"), (15_000, "skip")):
        measured.records = [{"step": 50 * i, "img_per_s": speed, "alone": True, "t": 100.0 + i} for i in range(5)]
        finish = 10 + 100 + entry.images / speed  # its start-up as measured (100 s), then its images
        assert judge.may_start(entry, [])[0] == verdict, (speed, finish, clock.deadlines())
        assert (finish > clock.eval_by) == (speed < 19_000) and (finish > clock.finish_by) == (verdict == "skip")


def test_the_release_stages_end_before_the_pack(tmp_path):
    """A stage still running when the pack begins is stopped with its whole session; its thread ends; its
    release is not packed."""
    clock = Clock(TINY, t0=time.monotonic())
    journal = Journal(clock, {"failures": []})
    (tmp_path / "logs").mkdir()
    releaser = Releaser(TINY, clock, journal, tmp_path, {}, tiny=True)
    entry = Entry(0, "r.yaml", 0, "byol_x", "byol", "x", 1, 8)
    info = journal.outcome(entry, "finished", stages={}, releasing=True)

    def stage():
        releaser.stage(info, entry, "eval", ["-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                                                   "'-c', 'import time; time.sleep(60)']); time.sleep(60)"])
        info.pop("releasing")

    releaser.threads.append(threading.Thread(target=stage))
    releaser.threads[0].start()
    while not releaser.stages:
        time.sleep(0.05)
    started = time.monotonic()
    releaser.end()
    assert time.monotonic() - started < 10 and not releaser.threads[0].is_alive()
    assert info["stages"]["eval"]["note"] == "stopped: the pack began" and "releasing" not in info


def test_a_late_release_is_registered_without_gpu_evaluation(tmp_path):
    """A run that finished after the evaluation window is exported and registered; its evaluation is left to the
    CPU, and the outcome says how."""
    clock = Clock(TINY, t0=time.monotonic() - (Clock(TINY, t0=0.0).pack_at - 20))  # 20 s before the pack
    journal = Journal(clock, {"failures": []})
    ran = []

    class Stages(Releaser):  # the stages' processes aside: which of them the release runs
        def stage(self, info, entry, name, args):
            ran.append(name)
            return True

    entry = Entry(0, "r.yaml", 0, "byol_x", "byol", "x", 1, 8)
    Stages(TINY, clock, journal, tmp_path, {}, tiny=True).release(Run(entry, "none", tmp_path / "run", "x"))
    release = journal.releases["byol.x"]
    assert ran == ["export"] and release["status"] == "registered" and "python -m train.eval" in release["note"]


def test_the_pack_leaves_out_what_it_cannot_read_and_unreleased_folders(tmp_path):
    clock = Clock(TINY, t0=time.monotonic())
    journal = Journal(clock, {"id": "x", "failures": [], "timings": {}, "stack": {}})
    report = draw_pack.Report(TINY, clock, journal, Judge(TINY, clock, journal), tmp_path, tiny=True)
    (tmp_path / "releases.json").write_text("{}\n")
    for name, status in (("a.t", "evaluated"), ("b.t", "finished")):  # b: its release did not end
        (tmp_path / "hub" / "ladder-zoo" / name).mkdir(parents=True)
        (tmp_path / "hub" / "ladder-zoo" / name / "config.json").write_text("{}")
        journal.releases[name] = {"status": status}
    listed = report.members()
    assert [m[0] for m in listed if m[0].startswith("hub/")] == ["hub/ladder-zoo/a.t/config.json"]
    gone = tmp_path / "gone.txt"
    report.members = lambda: [*listed, ("logs/gone.txt", gone, 2)]  # listed, then removed before it was read
    parts = report.pack()
    data = b"".join(p.read_bytes() for p in parts)
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "draw/logs/gone.txt" not in names and "draw/hub/ladder-zoo/a.t/config.json" in names
    assert any("logs/gone.txt unreadable" in f for f in journal.info["failures"])


def test_the_speed_record_says_what_bounded_a_run():
    h100 = {"cpu_cores_busy": 1.0, "data_wait": 0.001}  # results/h100_2026-11-23: one core at 100 %, GPU 39 % busy
    assert draw_pack.what_bounded(h100, {"1 run(s)": {"busy": 0.39}}).startswith("the host")
    assert draw_pack.what_bounded(h100, {"1 run(s)": {"busy": 0.97}}).startswith("the GPU")
    assert draw_pack.what_bounded({**h100, "data_wait": 0.4}, None).startswith("data loading")
    assert draw_pack.what_bounded({"cpu_cores_busy": 0.5, "data_wait": 0.0}, None).startswith("not clear")


def test_a_call_mirrors_the_record_and_returns_before_its_limit(tmp_path):
    """attach: the draw's files copied whole into $OUT as they change, the call back at its limit while the
    draw goes on; once the draw is done, its exit status."""
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "out").mkdir(parents=True)
    (work / "out" / "summary.txt").write_text("provisional\n")
    (work / "draw.out.txt").write_text("[ 0.0s] a line\n")
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier call")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        t0 = time.monotonic()
        assert draw.attach(work, out, t0, 0.5, 0.1, proc) is None and time.monotonic() - t0 < 5
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in out.iterdir()) == ["summary.txt"]
    (work / "done").write_text("2")
    assert draw.attach(work, out, time.monotonic(), 60, 0.1, pid=proc.pid) == 2


def test_call_2_without_call_1_says_so(tmp_path, capsys):
    assert draw.main(["--finish", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "none")]) == 1
    assert "no draw on this machine" in (tmp_path / "out" / "summary.txt").read_text()


def test_compile_caches_come_back_and_the_small_ones_are_kept(tmp_path):
    new = tmp_path / "work" / "compile_cache" / "NVIDIA_H200-torch2.11.0-triton3.6.0" / "byol_x.reduce-overhead.bin"
    new.parent.mkdir(parents=True)
    new.write_bytes(b"cache")
    assert draw_pack.new_caches(tmp_path / "work" / "compile_cache") == [new]
    big = new.with_name("ladder_x.reduce-overhead.bin")
    with open(big, "wb") as f:
        f.truncate(collect.CACHE_MAX + 1)
    caches = collect.install_caches(tmp_path / "work", tmp_path / "kept")
    assert caches["kept"] == [f"{new.parent.name}/{new.name}"] and caches["too_big"][0].startswith(
        f"{new.parent.name}/{big.name}")
    assert (tmp_path / "kept" / new.parent.name / new.name).read_bytes() == b"cache"


def test_the_docs_state_the_plan_it_prints(capsys):
    assert draw.main(["--plan"]) == 0
    printed = capsys.readouterr().out
    docs = (ROOT / "docs" / "performance.md").read_text()
    block = re.search(r"<!-- draw-plan:start -->\n```\n(.*?)```\n<!-- draw-plan:end -->", docs, re.S)
    assert block and block.group(1) == printed, "docs/performance.md's plan is stale: paste python3 " \
                                                "examples/gpu/draw.py --plan"
    h100 = H100Figures.read()
    assert 8_900 < h100.mean < 9_100 and 9_200 < h100.alone < 9_300  # results/h100_2026-11-23/README.md's figures
