"""One GPU draw in two device calls: the stack, a speed probe, as many queued release runs as can finish, and
their release (export, record, evaluation), packed into at most 8 files under $OUT.

    python3 examples/gpu/draw.py --plan                   the budget arithmetic and the two calls (no GPU needed)
    python3 examples/gpu/draw.py --start --out "$OUT"     call 1, data/ carried: starts the draw, returns early
    python3 examples/gpu/draw.py --finish --out "$OUT"    call 2, at once: waits for the draw's end, returns its pack

One device command lasts at most 10 minutes and a session holds the machine for 15 (its start included), but a
process started in a session of its own (setsid) keeps running between two calls while the machine is held, and
the machine is held while the next call comes within 30 s. So call 1 starts the draw's own process (--serve)
that way and returns before its limit with the provisional record; call 2 waits for that process to end and
returns the pack. A run's checkpoint (~190 MB) never comes back: each run starts, finishes, is exported and
evaluated inside the draw. examples/gpu/README.md has the calls as the device tool takes them; draw_plan.py the
budget. The draw's process, printing each stage as it goes (WORK/draw.out.txt; each call prints it too):

1. stack: Python, torch, triton, timm, huggingface_hub, the GPU, the data, free disk. No GPU or no data: one
   line, stop. The provisional record (summary.txt, speed.json) is written then, and after every event since.
2. speed probe: the first queued recipe runs 300 steps eagerly (compile=none) while the first run starts and
   compiles beside it. The fastest mode (reduce-overhead, else default) is measured on that first run
   itself: its first log windows are the probe, and its window losses must match the eager ones (within 5 %, as
   compile_probe.py) before another run starts beside it. A mode that fails or differs is dropped and the run
   restarts in the next one. img/s leave out each process's first windows (start-up, compilation) and, for the
   figures of one process alone, every window that may have overlapped another process's training.
3. runs (draw_runs.Judge): queue entries whose status is `queued`, in order, at most two at once. A run starts
   only if the img/s measured so far let it finish in time: alone, before the last moment it can still be
   exported (draw_plan: FINISH_BY); beside another, before the evaluation window (EVAL_BY). An entry not
   measured yet is taken to be at most 1.25 times as fast as the fastest run measured. A run alone that cannot
   finish at the img/s of its last windows, or the newer of two when either would not, is stopped with SIGTERM
   (it writes its checkpoint and exits 75). Checkpoints are written at the end only (each one slowed its window
   by a fifth). Compiled runs load and save Inductor's cache ($LADDER_ZOO_COMPILE_CACHE: the repository's
   examples/gpu/compile_cache/<stack>/ first; a new one is packed).
4. release of each finished run, while the others train (draw_release): `train.export --register` (fp16, 15 MB
   shards) into the draw's own release record, `train.eval` on the GPU (kNN per level; the linear probe only if
   time allows; none for a run that finished after EVAL_BY: evaluate it on the CPU later), then `train.export
   FOLDER --eval EVAL.json --register`. Every stage has ended before the pack begins.
5. pack (draw_pack): the Hub folders, evaluations, each run's log.jsonl, the release record, new compile caches,
   speed.json and draw.json into one tar, split into draw.tar.part00, part01, ... of at most 15 MiB, plus
   summary.txt (the parts' sha256 and the table) and speed.json.

A finished run is never lost to a later stage: whatever finished is packed, and every failure is named. Back on
the CPU machine, examples/gpu/collect.py checks and installs what came back. `--tiny` runs every stage on the CPU
with the committed 40+40-image sample, small heads, one epoch and a few probe steps (tests/test_draw.py). Its
shortened runs cannot be `--register`ed (train.export refuses them), so there the first export is a plain one and
`ladder_zoo.publish.register_release` writes the record entry; the rest is the same. A --tiny draw's weights are
no release: collect.py installs them only into folders given explicitly.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

T0 = time.monotonic()  # call 1 begins: the draw's clock (draw_plan.Clock) counts from here

from draw_pack import REPO_CACHE, Report, mirror  # noqa: E402  (this folder is sys.path[0] of the script)
from draw_plan import (CIFAR10_TRAIN, ROOT, Clock, H100Figures, Journal, count_train_images, last_line,  # noqa: E402
                       load_queue, plan_text, setting_for)
from draw_release import Releaser  # noqa: E402
from draw_runs import GpuBusy, Judge, Run  # noqa: E402

LATEST = ROOT / "runs" / "draw-latest"  # call 1's draw, for call 2
STACK = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
import torch
from train.step import stack_key
cuda = torch.cuda.is_available()
try:
    triton = version("triton")
except PackageNotFoundError:
    triton = None
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                  **{name: version(name) for name in ("timm", "torchvision", "huggingface_hub", "safetensors")},
                  "triton": triton, "compile_cache": stack_key(torch.device("cuda" if cuda else "cpu")),
                  "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30) if cuda else None}))
"""


class Draw:
    """The draw's own process (--serve): its parts (draw_runs.Judge, draw_release.Releaser, draw_pack.Report)
    and the loop that runs the queue."""

    def __init__(self, args, setting):
        self.args, self.setting = args, setting
        self.clock = Clock(setting, args.t0)
        started = datetime.datetime.now(datetime.timezone.utc)
        self.work = args.work
        self.logs = self.work / "logs"
        info = {"id": f"{started:%Y%m%dT%H%M%SZ}", "started": started.isoformat(), "tiny": args.tiny,
                "queue": str(args.queue), "setting": asdict(setting), "deadlines_s": self.clock.deadlines(),
                "failures": [], "timings": {}}
        self.journal = Journal(self.clock, info)
        self.judge = Judge(setting, self.clock, self.journal)
        self.entries = []
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, "LADDER_ZOO_RELEASES": str(self.work / "releases.json"),
                    "LADDER_ZOO_HUB_DIR": str(self.work / "hub"), "LADDER_ZOO_COMPILE_CACHE": str(
                        self.work / "compile_cache"), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                    "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        if args.tiny:
            self.env.update(OMP_NUM_THREADS="1", LADDER_ZOO_CACHE=str(self.work / "cache"))
        self.releaser = Releaser(setting, self.clock, self.journal, self.work, self.env, args.tiny)
        self.report = Report(setting, self.clock, self.journal, self.judge, self.work, args.tiny)

    def serve(self) -> int:
        """The whole draw; whatever happens, the pack and the final summary.txt end it."""
        s, clock, journal, info = self.setting, self.clock, self.journal, self.journal.info
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.work / "releases.json").write_text("{}\n")
        if REPO_CACHE.is_dir():
            shutil.copytree(REPO_CACHE, self.work / "compile_cache", dirs_exist_ok=True)
        journal.say(f"draw {info['id']}: deadlines (s after call 1 began) {clock.deadlines()}, work {self.work}")
        try:
            if self.check_data():
                self.report.gpu = GpuBusy()
                stack = self.start_stack()
                if self.entries:
                    self.start_probe()  # beside the stack check: it ends before the probe's first step
                self.count_images()
                if self.finish_stack(stack) and self.entries:
                    self.report.progress(force=True)
                    self.run_queue()
                    info["timings"]["runs_end_s"] = round(clock.now(), 1)
            while any(t.is_alive() for t in self.releaser.threads) and clock.now() < clock.pack_at:
                self.report.progress()
                time.sleep(s.poll_s)
        except Exception as e:  # pack whatever finished, and say what broke
            journal.fail(f"the draw broke: {type(e).__name__}: {e}")
        for run in self.judge.runs:  # the probe after a failed stack check, or anything left by a break
            if run.proc and run.proc.poll() is None:
                run.proc.kill()
        self.releaser.end()  # no stage writes while the pack reads
        if self.report.gpu:
            self.report.gpu.close()
        if "stopped" in info:
            journal.say(f"draw: stopped: {info['stopped']}")
        info["releases"] = journal.releases
        info["runs"] = [r.summary(s.skip_windows) for r in self.judge.runs]
        try:
            parts = self.report.pack()
        except Exception as e:  # summary.txt still says what happened
            journal.fail(f"the pack broke: {type(e).__name__}: {e}")
            parts = []
        summary = self.report.finish(parts)
        journal.say(f"packed: {len(parts)} part(s) and summary.txt, speed.json in {self.work / 'out'}")
        print(summary, flush=True)
        return 2 if "stopped" in info else 0

    # 1. the stack --------------------------------------------------------------------------------------------------
    def check_data(self) -> bool:
        """The data and the queue (no torch needed): the first half of the stack check."""
        data, info = ROOT / self.setting.data, self.journal.info
        info["stack"] = {"cpus": os.cpu_count(), "data": self.setting.data, "data_found": data.exists(),
                         "data_bytes": data.stat().st_size if data.is_file() else None,
                         "disk_free_gib": round(shutil.disk_usage(self.work).free / 2**30, 1),
                         "commit": _git("rev-parse", "HEAD"),
                         "uncommitted_files": _count_lines(_git("status", "--porcelain"))}
        if not data.exists():
            info["stopped"] = (f"no data: {self.setting.data} is missing (put cifar10-jpeg.tar.gz in the "
                               "checkout's data/ and carry it: run(..., carry=['data']))")
            return False
        self.entries = self.report.entries = load_queue(self.args.queue, self.setting)
        return True

    def count_images(self) -> None:
        """The runs' lengths in steps, from the training images (counted beside the stack check)."""
        data = ROOT / self.setting.data
        self.journal.info["n_train"] = n_train = count_train_images(data)
        for entry in self.entries:
            entry.count(n_train)
        self.journal.say(f"data: {self.setting.data}" + (f", {data.stat().st_size / 2**20:.1f} MiB" if data.is_file()
                                                         else "") + f", {n_train} training images; queue: "
                         f"{len(self.entries)} entries queued")

    def start_stack(self) -> subprocess.Popen:
        """Versions and the GPU, in a process of its own (the draw itself never initialises CUDA)."""
        return subprocess.Popen([sys.executable, "-c", STACK], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish_stack(self, proc: subprocess.Popen) -> bool:
        info = self.journal.info
        stack = info["stack"]
        try:
            out, err = proc.communicate(timeout=180)
            stack.update(json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 else
                         {"error": (err.strip().splitlines() or ["no output"])[-1]})
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as e:
            proc.kill()
            stack["error"] = repr(e)
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            stack["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
        info["timings"]["stack_s"] = round(self.clock.now(), 1)
        self.journal.say("stack: " + ", ".join(f"{k} {stack.get(k)}" for k in (
            "python", "torch", "triton", "timm", "huggingface_hub", "gpu", "cuda_available", "cpus", "disk_free_gib")))
        if "error" in stack:
            info["stopped"] = f"the stack check failed: {stack['error']}"
        elif self.setting.needs_gpu and not stack.get("cuda_available"):
            info["stopped"] = "no GPU: torch.cuda.is_available() is False (--tiny is the CPU check)"
        return "stopped" not in info

    # 2. the eager probe (the fastest mode's is the first run) ------------------------------------------------------
    def start_probe(self) -> None:
        entry, judge = self.entries[0], self.judge
        judge.eager = Run(entry, "none", self.work / "runs" / "probe-none", "probe-none", self.setting.probe_steps)
        judge.runs.append(judge.eager)
        judge.eager.start(self.setting, self.env, self.clock, self.logs)
        self.probe_limit = max(60.0, self.clock.eval_by / 3)
        self.journal.say(f"probe: {entry.name}, {self.setting.probe_steps} steps, compile=none")

    def watch_probe(self, beside: int) -> None:
        run = self.judge.eager
        if run.poll(self.clock, beside, self.setting.poll_s) is None:
            if self.clock.now() - run.started > self.probe_limit:
                run.proc.kill()
            return
        run.status = "finished" if run.rc == 0 and run.step == run.steps else "failed"
        (run.out_dir / "last.pt").unlink(missing_ok=True)  # its end-of-run checkpoint: not needed
        speed, alone = self.judge.eager_speed()
        if run.status == "failed" or speed is None:
            run.status = "failed"
            self.journal.fail(f"eager probe: exit {run.rc} at step {run.step}: {last_line(run.output)}; compiled "
                              "modes' losses go unchecked")
            return
        self.journal.say(f"probe: compile=none {speed:,.0f} img/s" + ("" if alone else " (beside a run)"))

    # 3. the runs ---------------------------------------------------------------------------------------------------
    def run_queue(self) -> None:
        s, judge, journal = self.setting, self.judge, self.journal
        pending = list(self.entries)
        running: List[Run] = []
        while True:
            eager = judge.eager
            probing = eager is not None and eager.status == "running"
            processes = running + ([eager] if probing else [])
            training = [r for r in processes if r.records]

            def beside(run):
                return sum(1 for r in training if r is not run)

            if probing:
                self.watch_probe(beside(eager))
            for run in list(running):
                self.watch(run, running, pending, beside(run))
            for new in [r for r in processes if r.records and r not in training]:  # it trained before it logged
                first = new.records[0]
                since = first["t"] - first["step"] * new.entry.batch_size / max(first["img_per_s"], 1e-9) - s.poll_s
                for other in processes:
                    if other is not new:
                        other.shared(since, self.clock.now())
            judge.judge(running)
            started = judge.started()
            while pending and len(running) < (s.max_parallel if judge.pairs_allowed else 1) \
                    and (s.max_runs is None or started < s.max_runs):
                verdict, why = judge.may_start(pending[0], running)
                if verdict == "wait":
                    break
                entry = pending.pop(0)
                if verdict == "skip":
                    journal.outcome(entry, "not started", note=why)
                    journal.say(f"{entry.name}: not started: {why}")
                    continue
                mode = judge.mode
                label = f"{entry.name}.{mode}"
                run = Run(entry, mode, self.work / "runs" / f"{entry.name}-s{entry.seed}.{mode}", label)
                run.start(s, self.env, self.clock, self.logs)
                judge.runs.append(run)
                running.append(run)
                started = judge.started()
                journal.say(f"{entry.name}: started, compile={mode}, {entry.total_steps} steps ({why})")
            probing = eager is not None and eager.status == "running"
            if self.report.gpu:
                self.report.gpu.phase = (f"{len(running)} run(s)" + (" + eager probe" if probing else "")
                                         if running or probing else "releasing")
            self.report.progress()
            if not running and not probing and (not pending or s.max_runs is not None and started >= s.max_runs):
                break
            time.sleep(s.poll_s)
        for entry in pending:
            if entry.release not in journal.releases:
                journal.outcome(entry, "not started", note="--max-runs reached")

    def watch(self, run: Run, running: List[Run], pending: list, beside: int) -> None:
        """A run's new windows, its mode's check against eager, its exit (then its release, or a retry)."""
        s, judge, journal = self.setting, self.judge, self.journal
        if run.poll(self.clock, beside, s.poll_s) is None:
            if not run.confirmed:
                judge.check_mode(run)
            return
        running.remove(run)
        verdict = judge.exited(run)
        if verdict == "finished":
            journal.say(f"{run.entry.name}: finished {run.steps} steps, {run.speed(s.skip_windows) or 0:,.0f} img/s")
            self.releaser.start(run)
        elif verdict == "stopped" or verdict == "retry" and run.status == "stopped":
            journal.say(f"{run.entry.name}: stopped at step {run.step} of {run.steps} (exit {run.rc}): {run.note}")
            journal.outcome(run.entry, "stopped", note=run.note, step=run.step)
        if verdict == "retry":
            journal.say(f"{run.entry.name}: compile={run.mode} dropped ({judge.mode_failures[run.mode]}); next: "
                        f"compile={judge.mode}")
            pending.insert(0, run.entry)
        elif verdict == "failed":
            journal.fail(f"{run.entry.name}: {run.note}")
            journal.outcome(run.entry, "failed", note=run.note)


# --- the two device calls ---------------------------------------------------------------------------------------------
def start(args, setting) -> int:
    """Call 1: the draw's process in a session of its own, then its record into $OUT until CALL1_S."""
    started = datetime.datetime.now(datetime.timezone.utc)
    work = (args.work or ROOT / "runs" / f"draw-{started:%Y%m%d-%H%M%S}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--work", str(work), "--t0", repr(T0),
               "--queue", str(args.queue), *(["--tiny"] if args.tiny else []),
               *(["--max-runs", str(args.max_runs)] if args.max_runs is not None else []),
               *(["--device-s", str(args.device_s)] if args.device_s is not None else [])]
    with open(work / "draw.out.txt", "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # setsid: it outlives this command
    (work / "state.json").write_text(json.dumps({"pid": proc.pid, "t0": T0, "end_s": setting.end_s,
                                                 "call1_s": setting.call1_s, "command": command}) + "\n")
    if args.work is None:
        LATEST.unlink(missing_ok=True)
        LATEST.symlink_to(work)
    print(f"call 1: the draw's process {proc.pid} runs in {work}; this call returns at {setting.call1_s:.0f} s, "
          f"the draw's files are final at {setting.end_s:.0f} s", flush=True)
    ended = attach(work, args.out, T0, setting.call1_s, setting.poll_s, proc)
    if ended is None:
        print(f"call 1 returns after {time.monotonic() - T0:.0f} s; the draw goes on. Call 2 NOW (the machine goes "
              "back 30 s after this call): python3 examples/gpu/draw.py --finish --out \"$OUT\"", flush=True)
        return 0
    return ended


def finish(args, setting) -> int:
    """Call 2: wait for the draw's end (or this call's limit), its files into $OUT."""
    work = (args.work or LATEST).resolve()
    if not (work / "state.json").is_file():
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.txt").write_text(
            f"no draw on this machine ({work} holds no state.json): call 1's machine went back before call 2 came "
            "(more than 30 s between the calls?), or call 1 did not run. Nothing ran; start again with call 1.\n")
        print((args.out / "summary.txt").read_text(), end="", flush=True)
        return 1
    state = json.loads((work / "state.json").read_text())
    until = min(state["end_s"] + 60, time.monotonic() - state["t0"] + setting.call_s - setting.call_margin_s)
    ended = attach(work, args.out, state["t0"], until, setting.poll_s, pid=state["pid"])
    if ended is None:
        print(f"call 2 returns at its limit ({until:.0f} s after call 1 began) before the draw's pack: $OUT holds its "
              "provisional record (summary.txt, speed.json)", flush=True)
        return 1
    return ended


def attach(work: Path, out: Path, t0: float, until: float, poll_s: float, proc: Optional[subprocess.Popen] = None,
           pid: Optional[int] = None) -> Optional[int]:
    """Print the draw's new lines and mirror WORK/out into ``out`` until the draw has ended (its exit code; 3 if
    its process died without its pack) or ``until`` seconds after ``t0`` (None)."""
    log, printed = work / "draw.out.txt", 0
    while True:
        done = (work / "done").is_file()
        alive = proc.poll() is None if proc is not None else _alive(pid)
        printed = _print_new(log, printed)
        mirror(work / "out", out)
        if done:
            return int((work / "done").read_text() or 0)
        if not alive:
            print(f"the draw's process ended without its pack: the end of {log} above says why", flush=True)
            return 3
        if time.monotonic() - t0 >= until:
            return None
        time.sleep(poll_s)


def _print_new(log: Path, printed: int) -> int:
    if not log.is_file():
        return printed
    with open(log, "rb") as f:
        f.seek(printed)
        data = f.read()
    whole = data[:data.rfind(b"\n") + 1]
    if whole:
        sys.stdout.write(whole.decode(errors="replace"))
        sys.stdout.flush()
    return printed + len(whole)


def _alive(pid: Optional[int]) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _count_lines(text: Optional[str]) -> Optional[int]:
    return None if text is None else len(text.splitlines())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="examples/gpu/draw.py", description=__doc__.split("\n")[0])
    call = parser.add_mutually_exclusive_group(required=True)
    call.add_argument("--plan", action="store_true", help="print the budget arithmetic and the two calls")
    call.add_argument("--start", action="store_true", help="call 1: start the draw, return at CALL1_S")
    call.add_argument("--finish", action="store_true", help="call 2: wait for the draw's end, return its pack")
    call.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the draw's own process
    parser.add_argument("--out", type=Path, help="where the returned files go ($OUT)")
    parser.add_argument("--queue", type=Path, default=ROOT / "examples" / "gpu" / "queue.yaml")
    parser.add_argument("--tiny", action="store_true", help="every stage on the CPU, tiny (tests/test_draw.py)")
    parser.add_argument("--work", type=Path, help="the draw's folder (default runs/draw-<UTC time>; call 2 finds "
                                                  "call 1's by runs/draw-latest)")
    parser.add_argument("--max-runs", type=int, help="start at most this many queue entries (--tiny: 2)")
    parser.add_argument("--device-s", type=float, help="device time the session has left, its status's "
                                                       "budget_left_s (default 900)")
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setting = setting_for(args.tiny, args.device_s, args.max_runs)
    if args.plan:
        entries = load_queue(args.queue, setting, queued_only=False)
        n_train = CIFAR10_TRAIN if not args.tiny else count_train_images(ROOT / setting.data)
        for entry in entries:
            entry.count(n_train)
        print(plan_text(setting, entries, H100Figures.read(), f"{n_train:,} training images, 200 epochs"), end="")
        return 0
    if args.serve:
        draw = Draw(args, setting)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: draw.clock.abort())
        rc = 2
        try:
            rc = draw.serve()
        finally:
            (draw.work / "done").write_text(str(rc))
        return rc
    if args.out is None:
        parser.error("--start and --finish take --out (the device call's $OUT)")
    args.out.mkdir(parents=True, exist_ok=True)
    return start(args, setting) if args.start else finish(args, setting)


if __name__ == "__main__":
    sys.exit(main())
