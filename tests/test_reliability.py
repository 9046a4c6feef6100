"""What clusters do to training, done for real on the CPU: SIGTERM / SIGUSR1 preemption (one rank signalled),
kill -9 of a worker under torchrun --max-restarts, two torchrun "nodes" with c10d rendezvous on 127.0.0.1 equal to
one process (and, without SyncBatchNorm, not), a corrupt last.pt, a full disk, a data set whose files changed; and what the log shows a cluster user.

Every run is helpers.FAST_RUN, the tests' tiny run on timm's resnet10t, 6 steps of its 10-step schedule:
interrupted runs must end bit-equal to an uninterrupted one."""
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from helpers import FAST_RUN, FAST_STEPS, ROOT, SAMPLE, TINY_STEPS, flatten
from train import checkpoint
from train.config import load_config
from train.pretrain import main, train
from train.preemption import PREEMPTED_EXIT_CODE


def launch(out_dir, *overrides, launcher=(), **popen):
    cmd = [sys.executable, *(["-m", "torch.distributed.run", *launcher] if launcher else []), "-m", "train.pretrain",
           *FAST_RUN, f"out_dir={out_dir}", *overrides]
    # torchrun's workers otherwise share the rendezvous TCPStore across restarts and may read the previous
    # attempt's gloo addresses (pytorch/pytorch#135712): README's torchrun line sets it too
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, **popen)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out or "") + (err or "")


def run(out_dir, *overrides, launcher=()):
    code, output = finish(launch(out_dir, *overrides, launcher=launcher, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE))
    assert code == 0, output
    return output


def standalone(nproc, *extra):
    return ["--standalone", f"--nproc_per_node={nproc}", *extra]


def records(run_dir):
    path = run_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, proc, what, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {finish(proc)[1][-3000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def state(run_dir, name="last.pt"):
    return torch.load(run_dir / name, weights_only=True)


def assert_bit_equal(a, b):
    assert a["step"] == b["step"] == FAST_STEPS
    for key in ("model", "optimizer"):
        flat_a, flat_b = flatten(a[key]), flatten(b[key])
        assert flat_a.keys() == flat_b.keys()
        differ = [k for k in flat_a if not torch.equal(flat_a[k], flat_b[k])]
        assert not differ, f"{key}: {len(differ)} tensors differ, e.g. {differ[:3]}"


def workers(launcher_pid, count, timeout=120):
    """{RANK: pid} of torchrun's worker processes (its children), read from /proc."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {}
        for tid in os.listdir(f"/proc/{launcher_pid}/task"):
            with open(f"/proc/{launcher_pid}/task/{tid}/children") as f:
                for pid in f.read().split():
                    try:
                        with open(f"/proc/{pid}/environ", "rb") as e:
                            env = dict(v.split(b"=", 1) for v in e.read().split(b"\0") if b"=" in v)
                    except OSError:
                        continue
                    if b"RANK" in env:
                        found[int(env[b"RANK"])] = int(pid)
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"torchrun {launcher_pid} did not start {count} workers")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The uninterrupted single-process run: 6 steps, checkpoints at steps 2, 4, 6."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    run(run_dir, "checkpoint_every=2", "keep_checkpoints=3")
    return run_dir


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Two torchrun agents ("nodes") of one process each, meeting by c10d rendezvous on 127.0.0.1: the
    uninterrupted 2-process run the interrupted 2-process runs must equal."""
    run_dir = tmp_path_factory.mktemp("two") / "run"
    port = free_port()
    node = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id=twonodes{port}"]
    procs = [launch(run_dir, "checkpoint_every=2", "keep_checkpoints=3", launcher=node, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, output in results:
        assert code == 0, output
    return run_dir, "\n".join(output for _, output in results)


def test_sigterm_checkpoints_the_step_reached_and_resume_is_exact(one_process, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "checkpoint_every=100", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len(records(run_dir)) >= 2, proc, "step 2")
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    logged = records(run_dir)[-1]["step"]
    assert code == PREEMPTED_EXIT_CODE, output
    assert 2 <= logged < FAST_STEPS, "the signal was to come mid-run"
    assert state(run_dir)["step"] == logged  # no step lost: the checkpoint holds the last step run
    assert f"preempted by SIGTERM: checkpoint {run_dir / 'last.pt'} holds step {logged}" in output
    output = run(run_dir, "checkpoint_every=100")  # resume=auto
    assert f"steps {logged}..{FAST_STEPS}" in output
    assert_bit_equal(state(run_dir), state(one_process))


def test_ctrl_c_checkpoints_the_step_reached_and_resume_is_exact(one_process, tmp_path):
    """Ctrl-C at a terminal: SIGINT to the run's whole process group."""
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "checkpoint_every=100", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  start_new_session=True)
    wait_for(lambda: len(records(run_dir)) >= 2, proc, "step 2")
    os.killpg(proc.pid, signal.SIGINT)
    code, output = finish(proc)
    logged = records(run_dir)[-1]["step"]
    assert code == PREEMPTED_EXIT_CODE and "Traceback" not in output, output
    assert 2 <= logged < FAST_STEPS, "the signal was to come mid-run"
    assert state(run_dir)["step"] == logged
    assert "Ctrl-C: stopping after this step with a checkpoint; Ctrl-C again stops at once" in output
    assert f"stopped by Ctrl-C (SIGINT): checkpoint {run_dir / 'last.pt'} holds step {logged}; the same command again continues from it" in output
    output = run(run_dir, "checkpoint_every=100")
    assert f"steps {logged}..{FAST_STEPS}" in output
    assert_bit_equal(state(run_dir), state(one_process))


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path, capsys):
    """Here the second Ctrl-C may land anywhere, in a checkpoint write included (one every step): the checkpoints
    written before stay readable."""
    def ctrl_c_twice():
        wait = time.time() + 120
        while not (tmp_path / "last.pt").exists() and time.time() < wait:
            time.sleep(0.01)
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    sender = threading.Thread(target=ctrl_c_twice)
    sender.start()
    code = main([*FAST_RUN, f"out_dir={tmp_path}", f"max_steps={TINY_STEPS}", "checkpoint_every=1"])
    sender.join()
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"train.pretrain: stopped at once by Ctrl-C; the checkpoints written before stay as they were (resume=auto "
        f"continues from {tmp_path / 'last.pt'} if it exists)")
    assert checkpoint.load_ssl_checkpoint(tmp_path / "last.pt").step >= 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run's handler is gone


def test_ctrl_c_inside_a_checkpoint_write_is_a_ctrl_c(tmp_path, monkeypatch):
    """torch.save's zip writer, cut mid-stream by KeyboardInterrupt, fails in turn (RuntimeError "unexpected pos"):
    still the Ctrl-C, not a disk error, and no partial file."""
    real_save = torch.save

    class CutShort:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                self.f.write(bytes(data)[:10])
                raise KeyboardInterrupt
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: real_save(obj, CutShort(f), *args, **kwargs))
    with pytest.raises(KeyboardInterrupt):
        checkpoint._write(tmp_path, {"step": 1, "weights": torch.zeros(100_000)})
    assert list(tmp_path.iterdir()) == []


def test_sigusr1_to_one_rank_stops_every_rank_after_the_same_step(two_nodes, tmp_path):
    """SLURM's --signal=USR1 reaching rank 1 only: rank 0 learns it by the per-step all_reduce, both stop after
    the same step, rank 0 writes it, both exit 75; a 2-process resume is exact."""
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "checkpoint_every=100", launcher=standalone(2), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    ranks = workers(proc.pid, 2)
    wait_for(lambda: len(records(run_dir)) >= 2, proc, "step 2")
    os.kill(ranks[1], signal.SIGUSR1)
    code, output = finish(proc)
    logged = records(run_dir)[-1]["step"]
    assert code != 0 and 2 <= logged < FAST_STEPS, output
    # both ranks stopped after the same step (the one rank 0 wrote); torchrun reports the first exit, 75
    assert output.count(f"preempted by SIGUSR1: checkpoint {run_dir / 'last.pt'} holds step {logged}") == 2, output
    assert f"exitcode  : {PREEMPTED_EXIT_CODE}" in output
    assert state(run_dir)["step"] == logged
    output = run(run_dir, "checkpoint_every=100", launcher=standalone(2))
    assert f"steps {logged}..{FAST_STEPS}" in output
    assert_bit_equal(state(run_dir), state(two_nodes[0]))


def test_torchrun_restarts_the_group_after_kill_9_and_ends_bit_equal(two_nodes, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "checkpoint_every=2", launcher=standalone(2, "--max-restarts=1"),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ranks = workers(proc.pid, 2)
    wait_for(lambda: (run_dir / "last.pt").exists() and len(records(run_dir)) >= 3, proc, "step 3")
    os.kill(ranks[1], signal.SIGKILL)
    reached = records(run_dir)[-1]["step"]
    code, output = finish(proc)
    assert code == 0, output
    starts = [int(s) for s in re.findall(rf"steps (\d+)\.\.{FAST_STEPS} of {TINY_STEPS}", output)]
    assert len(starts) == 2 and starts[0] == 0 and 2 <= starts[1] <= reached < FAST_STEPS, output
    assert reached - starts[1] < 2  # lost: only the steps since the last checkpoint (every 2)
    assert_bit_equal(state(run_dir), state(two_nodes[0]))


def gap_at_step_2(a, b):
    """|| a - b || / || a || over the float tensors of two runs' models after step 2."""
    a, b = ({k: v for k, v in flatten(state(d, "step-0000002.pt")["model"]).items() if v.is_floating_point()}
            for d in (a, b))
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5 / sum((a[k] ** 2).sum() for k in a) ** 0.5)


def test_two_nodes_train_as_one_process_and_log_the_mean_over_ranks(one_process, two_nodes):
    run_dir, output = two_nodes
    assert "2 process(es) on cpu" in output
    # After 2 steps the weights agree to float32 rounding (BN sums and gradients added in another order: ~1e-6);
    # the rounding then grows ~10x a step as the lr warms up to 1.0 (1e-3 at step 6), so later steps are not compared
    assert gap_at_step_2(one_process, run_dir) < 1e-5
    for a, b in zip(records(one_process), records(run_dir)):  # rank 0's own loss is that of half the batch
        assert a["step"] == b["step"]
        if a["step"] <= 3:
            for key in ("loss", "loss/res2", "loss/res5"):  # means (std/* is a per-rank batch statistic)
                assert b[key] == pytest.approx(a[key], rel=1e-5), key
        assert len(a["peak_mem_mib"]) == 1 and len(b["peak_mem_mib"]) == 2 and min(b["peak_mem_mib"]) > 100
        assert 0 <= b["data_wait"] < 1 and b["img_per_s"] > 0


def test_without_sync_bn_two_processes_are_not_one(one_process, tmp_path):
    """The control of the test above: with sync_bn=false each process normalises by its own half of the batch, and
    the two runs differ by orders of magnitude more than float32 rounding."""
    run(tmp_path / "run", "checkpoint_every=2", "keep_checkpoints=3", "sync_bn=false", launcher=standalone(2))
    assert gap_at_step_2(one_process, tmp_path / "run") > 1e-3  # 0.044 measured; synced: < 1e-5


def tiny(tmp_path, *overrides):
    return load_config(None, [*FAST_RUN, f"out_dir={tmp_path}", *overrides])


def test_corrupt_last_checkpoint_falls_back_on_the_previous_one(one_process, tmp_path, one_thread):
    train(tiny(tmp_path, "checkpoint_every=2", "max_steps=4"))
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["last.pt", "step-0000002.pt"]
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut short
    with pytest.warns(UserWarning, match=r"last.pt cannot be read \(WeightsIntegrityError.*; trying step-0000002.pt"):
        train(tiny(tmp_path, "checkpoint_every=2"))
    assert [r["step"] for r in records(tmp_path)][2 - FAST_STEPS:] == list(range(3, FAST_STEPS + 1))  # from step 2
    assert sorted(p.name for p in tmp_path.iterdir() if "pt" in p.name) == ["last.pt", "last.pt.corrupt",
                                                                           "step-0000004.pt"]
    assert_bit_equal(state(tmp_path), state(one_process))


def test_keep_checkpoints_keeps_that_many(tmp_path):
    """keep_checkpoints=2 (the default) is checked by the corrupt-checkpoint test; 3 here."""
    train(tiny(tmp_path, "checkpoint_every=1", "max_steps=4", "keep_checkpoints=3"))
    assert sorted(p.name for p in tmp_path.iterdir() if "pt" in p.name) == [
        "last.pt", "step-0000002.pt", "step-0000003.pt"]
    assert [state(tmp_path, n)["step"] for n in ("last.pt", "step-0000003.pt", "step-0000002.pt")] == [4, 3, 2]
    with pytest.raises(ValueError, match="keep_checkpoints=0 is not valid: it takes an integer >= 1"):
        train(tiny(tmp_path, "keep_checkpoints=0"))


def test_disk_full_keeps_the_previous_checkpoint_and_stops(tmp_path, monkeypatch, capsys):
    real_save, saves = torch.save, []

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"PK\x03\x04" + b"\0" * 4096)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    code = main([*FAST_RUN, f"out_dir={tmp_path}", "checkpoint_every=1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 4
    assert err == (f"train.pretrain: stopped: could not write the checkpoint of step 2 to {tmp_path}: No space left "
                   f"on device (disk full: free space, or set out_dir on another disk); the previous checkpoint "
                   f"{tmp_path / 'last.pt'} (step 1) is intact. Fix the disk, then resume=auto.")
    assert sorted(p.name for p in tmp_path.iterdir() if "pt" in p.name) == ["last.pt"]  # no half-written file
    assert checkpoint.load_ssl_checkpoint(tmp_path / "last.pt").step == 1


def test_resume_on_changed_files_is_an_error_naming_them(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "train", data)
    run_dir = tmp_path / "run"
    overrides = [f"data.path={data}", "data.split=", "checkpoint_every=1"]
    train(tiny(run_dir, *overrides, "max_steps=1"))
    removed = sorted(data.glob("dog/*.jpg"))[0]
    shutil.copy(removed, data / "cat" / "added.jpg")
    removed.unlink()
    with pytest.raises(ValueError) as e:
        train(tiny(run_dir, *overrides, "max_steps=2"))
    message = str(e.value)
    assert "\n" not in message and f"data.path={data} changed since {run_dir / 'last.pt'} (step 1)" in message
    assert f"1 added (cat/added.jpg); 1 removed (dog/{removed.name}); 40 -> 40 files" in message
    assert "data.allow_changed=true" in message
    train(tiny(run_dir, *overrides, "max_steps=2", "data.allow_changed=true"))
    assert records(run_dir)[-1]["step"] == 2


def test_data_wait_measures_a_slow_loader(tmp_path, monkeypatch):
    from train.data.gpu_augment import GpuPipeline

    batches = GpuPipeline.batches

    def slow(self, start, stop):
        for batch in batches(self, start, stop):
            time.sleep(0.5)
            yield batch

    monkeypatch.setattr(GpuPipeline, "batches", slow)
    train(tiny(tmp_path, "max_steps=3"))
    for record in records(tmp_path):  # one step per record: the window lasted batch_size / img_per_s seconds
        waited = record["data_wait"] * 8 / record["img_per_s"]
        assert 0.5 <= waited < 0.75, record
