"""One GPU draw in one command: the stack, a speed probe, as many queued release runs as can finish, and their
release (export, record, evaluation), all packed into at most 8 files under --out.

    python examples/gpu/draw.py --out "$OUT" [--budget-s 540] [--queue examples/gpu/queue.yaml] [--tiny]

A draw is one command of at most 10 minutes on a borrowed GPU machine, and only what is under $OUT comes back
(at most 8 files, each at most 16 MiB, 64 MiB together). A run's checkpoint (~190 MB) never comes back, so each
run starts, finishes, is exported and is evaluated inside this command. The stages, each printed as it goes:

1. stack: Python, torch, timm, huggingface_hub, the GPU, the data, free disk. No GPU or no data: one line, stop.
2. speed probe: the first queued recipe runs 300 steps eagerly (compile=none) while the first run starts and
   compiles beside it. The fastest mode (reduce-overhead, else default) is measured on that first run
   itself: its first log windows are the probe, and its window losses must match the eager ones (within 5 %, as
   compile_probe.py) before another run starts beside it. A mode that fails or differs is dropped and the run
   restarts in the next one. img/s leave out each process's first windows (start-up, compilation) and, for the
   figures of one process alone, every window that may have overlapped another process's training.
3. runs: queue entries whose status is `queued`, in order, at most two at once on the GPU. A run starts only if
   the img/s measured so far let it finish before the training deadline (the budget less the time the release
   and the pack need); an entry not measured yet is taken to be at most 1.25 times as fast as the fastest run
   measured, and a second run starts only beside one that would finish even 1.25 times slower. Each run is
   watched through its log.jsonl: one alone that cannot finish at the img/s of its last windows, or the newer of
   two when either would not finish, is stopped with SIGTERM (it writes its checkpoint and exits 75) and
   reported as not finished. Checkpoints are written at the end only (each one slowed its window by a fifth).
4. release of each finished run, while the others train: `train.export --register` (fp16, 15 MB shards) into the
   draw's own release record ($LADDER_ZOO_RELEASES), `train.eval` of the checkpoint on the GPU (kNN per level;
   the linear probe only if the time left allows), then `train.export FOLDER --eval EVAL.json --register`.
5. pack: the Hub folders, evaluations, each run's log.jsonl, the release record, speed.json (img/s per run and
   mode, the eager / fastest ratio, GPU busy fraction per phase) and draw.json (everything else) into one tar,
   split into draw.tar.part00, part01, ... of at most 15 MiB, plus summary.txt (the parts' sha256 and the table
   printed last).

A finished run is never lost to a later stage: whatever finished is packed, and every failure is named. Back on
the CPU machine, examples/gpu/collect.py checks and installs what came back. `--tiny` runs every stage on the CPU
with the committed 40+40-image sample, small heads, one epoch and a few probe steps (tests/test_draw.py). Its
shortened runs cannot be `--register`ed (train.export refuses them), so there the first export is a plain one and
`ladder_zoo.publish.register_release` writes the record entry; the rest (the evaluation, `--eval --register`, the
pack, collect.py's checks) is the same. A --tiny draw's weights are no release: collect.py installs them only into
folders given explicitly.
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
PART_SIZE = 15 * 2**20  # bytes per returned part
EXPORT_FORMAT = ["--dtype", "fp16", "--max-shard-size", "15MB"]  # train.export: every shard fits in a part
MAX_FILES, MAX_TOTAL = 8, 64 * 2**20  # what comes back from $OUT
OPTIMISM = 1.25  # an entry not measured yet is taken to be at most this much faster than the fastest run measured
PAIR_SLACK = 1.25  # a second run starts beside one only if that one would finish even this much slower
LOSS_TOLERANCE = 0.05  # largest relative difference of a compiled mode's window losses from eager's
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ALL = 10**9  # every window


@dataclass
class Setting:
    """What differs between a real draw (GPU) and --tiny (CPU); the *_s are the time estimates of the plan."""

    data: str
    device: str  # train.eval --device
    needs_gpu: bool
    overrides: List[str]  # added to every train.pretrain command
    fast_modes: List[str]  # compile modes tried for the runs, fastest first
    probe_steps: int
    log_every: int  # the probe's and the runs' (their losses are compared window by window)
    skip_windows: int  # a process's first log windows, left out of img/s (start-up, autotuning, compilation)
    decide_windows: int  # steady windows a run needs before it is judged
    eval_args: List[str]
    linear_epochs: int
    startup_s: float  # a run's start until its first window, before one is measured
    export_s: float
    eval_s: float  # the kNN evaluation
    linear_s: float  # the linear probe on top of it
    attach_s: float
    pack_s: float
    margin_s: float
    poll_s: float
    max_parallel: int
    max_runs: Optional[int]


GPU = Setting(
    data="data/cifar10-jpeg.tar.gz", device="cuda", needs_gpu=True, overrides=[],
    fast_modes=["reduce-overhead", "default"], probe_steps=300, log_every=50, skip_windows=2, decide_windows=3,
    eval_args=["--workers", "8"], linear_epochs=100, startup_s=60, export_s=20, eval_s=50, linear_s=60,
    attach_s=10, pack_s=15, margin_s=15, poll_s=1.0, max_parallel=2, max_runs=None,
)
TINY = Setting(
    data="tests/data/cifar10_sample", device="cpu", needs_gpu=False,
    overrides=[  # tests/test_train_runs.py's TINY, with each recipe's own method and augmentation
        "data.path=tests/data/cifar10_sample", "data.image_size=16", "device=cpu", "amp=none", "channels_last=false",
        "data.workers=0",
        "batch_size=8", "epochs=1", "optim.warmup_epochs=0", "method.proj_hidden=32", "method.proj_out=16",
        "method.pred_hidden=32",
    ],
    fast_modes=["none"], probe_steps=3, log_every=1, skip_windows=1, decide_windows=1,
    eval_args=["--per-class", "2", "--views", "4", "--gradmaps", "0", "--workers", "0"], linear_epochs=0,
    startup_s=10, export_s=10, eval_s=15, linear_s=0, attach_s=10, pack_s=5, margin_s=5, poll_s=0.2,
    max_parallel=2, max_runs=2,
)
# --tiny's first export: a plain export, then the record entry (train.export --register refuses shortened runs)
TINY_EXPORT = """
import sys
from pathlib import Path
from ladder_zoo.publish import register_release
from train.export import main
rc = main(sys.argv[1:])
out = Path(sys.argv[sys.argv.index("--out") + 1])
if rc == 0:
    register_release("/".join(out.parts[-2:]), out)
sys.exit(rc)
"""
STACK = """
import json, sys
from importlib.metadata import version
import torch
cuda = torch.cuda.is_available()
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                  **{name: version(name) for name in ("timm", "torchvision", "huggingface_hub", "safetensors")},
                  "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30) if cuda else None}))
"""
LINES: List[str] = []  # what the draw printed, packed as draw.log
PRINTING = threading.Lock()  # the release threads print too


class Clock:
    """Seconds since the draw started, and its deadlines in those seconds."""

    def __init__(self, budget: float, setting: Setting):
        self.t0 = time.monotonic()
        self.pack_at = budget - setting.pack_s  # the release stages end by then
        self.train_until = self.pack_at - setting.export_s - setting.eval_s - setting.attach_s - setting.margin_s

    def now(self) -> float:
        return time.monotonic() - self.t0

    def abort(self) -> None:
        """The draw got SIGTERM / SIGINT: the runs stop now, what finished is released and packed."""
        self.train_until = min(self.train_until, self.now())


def say(text: str, clock: Clock) -> None:
    line = f"[{clock.now():6.1f}s] {text}"
    with PRINTING:
        LINES.append(line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@dataclass
class Entry:
    """A queue entry and what its recipe says."""

    index: int
    recipe: str
    seed: int
    name: str  # the recipe's name: <model>_<tag>
    model: str
    tag: str
    epochs: int
    batch_size: int
    total_steps: int = 0  # once the training images are counted: epochs x (images // batch), as StepSampler

    @property
    def release(self) -> str:
        return f"{self.model}.{self.tag}"


def load_queue(path: Path, setting: Setting) -> List[Entry]:
    """The entries whose status is exactly `queued`, with their recipe's name, model, tag, epochs and batch."""
    entries = []
    for i, item in enumerate(yaml.safe_load(path.read_text()) or []):
        if str(item.get("status", "")).strip() != "queued":
            continue
        recipe = yaml.safe_load((ROOT / item["recipe"]).read_text())
        values = {**recipe, **{k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in setting.overrides)}}
        name, model = recipe["name"], recipe["model"]
        if not name.startswith(model + "_"):
            raise ValueError(f"{item['recipe']}: its name {name} is not <model>_<tag>")
        entries.append(Entry(i, item["recipe"], int(item.get("seed", 0)), name, model, name[len(model) + 1:],
                             int(values["epochs"]), int(values["batch_size"])))
    return entries


def count_train_images(data: Path) -> int:
    """Images of the train split (train.data.ImageFolder's rule: train/<class>/<image>), without decoding."""
    if data.is_dir():
        return sum(1 for p in (data / "train").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    with tarfile.open(data, "r:*") as tar:
        names = [m.name[2:] if m.name.startswith("./") else m.name for m in tar if m.isfile()]
    return sum(1 for n in names if n.startswith("train/") and n.count("/") == 2 and n.lower().endswith(IMAGE_SUFFIXES))


# --- one training process ------------------------------------------------------------------------------------------
class Run:
    """One train.pretrain process and what its log.jsonl says."""

    def __init__(self, entry: Entry, mode: str, out_dir: Path, label: str, max_steps: Optional[int] = None):
        self.entry, self.mode, self.out_dir, self.label = entry, mode, out_dir, label
        self.steps = max_steps or entry.total_steps
        self.max_steps = max_steps
        self.records: List[dict] = []  # log windows, with "t" (draw seconds when read) and "alone" (see poll)
        self.proc: Optional[subprocess.Popen] = None
        self.rc: Optional[int] = None
        self.status = "pending"  # running, stopping, finished, stopped, failed
        self.note = ""
        self.confirmed = False  # its losses matched eager's, or there was nothing to compare them with
        self.loss_diff: Optional[float] = None
        self.started = self.ended = self.kill_at = None
        self.cpu: List[tuple] = []  # (draw seconds, CPU seconds of the process): at its first window, at the last
        self.shared_until = -1e9  # the last time another process was seen training beside this one
        self._read = 0

    def start(self, setting: Setting, env: dict, clock: Clock, logs: Path) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)
        self.out_dir.mkdir(parents=True)
        command = [sys.executable, "-m", "train.pretrain", "--config", self.entry.recipe, f"seed={self.entry.seed}",
                   f"compile={self.mode}", "progress=false", "tensorboard=false", f"checkpoint_every={self.steps}",
                   "keep_checkpoints=1", f"log_every={setting.log_every}", "resume=none", f"out_dir={self.out_dir}",
                   *([f"max_steps={self.max_steps}"] if self.max_steps else []), *setting.overrides]
        self.output = logs / f"{self.label}.out.txt"
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started, self.status = clock.now(), "running"

    def poll(self, clock: Clock, beside: int, poll_s: float) -> Optional[int]:
        """Read the new log windows; the exit code once the process ended. ``beside``: how many other processes
        train now. A window is "alone" if it began (by its img/s, less a poll interval) after the last time another
        process was seen training."""
        now = clock.now()
        if beside:
            self.shared_until = now
        log = self.out_dir / "log.jsonl"
        if log.is_file():
            with open(log, "rb") as f:
                f.seek(self._read)
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # half written: read again next time
                    self._read += len(line)
                    record = json.loads(line)
                    seconds = (record["step"] - self.step) * self.entry.batch_size / max(record["img_per_s"], 1e-9)
                    alone = not beside and now - seconds - poll_s > self.shared_until
                    self.records.append({**record, "t": round(now, 2), "alone": alone})
        if self.rc is None and self.records:
            cpu = _cpu_seconds(self.proc.pid)
            if cpu is not None:
                self.cpu = [self.cpu[0] if self.cpu else (clock.now(), cpu), (clock.now(), cpu)]
        if self.rc is None and self.proc.poll() is not None:
            self.rc, self.ended = self.proc.returncode, clock.now()
        if self.status == "stopping" and self.rc is None and clock.now() > self.kill_at:
            self.proc.kill()
        return self.rc

    @property
    def step(self) -> int:
        return self.records[-1]["step"] if self.records else 0

    def shared(self, since: float, now: float) -> None:
        """Another process has been training since ``since`` (learnt from its first window, read ``now``)."""
        self.shared_until = max(self.shared_until, now)
        for record in self.records:
            record["alone"] = record["alone"] and record["t"] < since

    def windows(self, skip: int, last: int = ALL, alone: Optional[bool] = None) -> List[dict]:
        """The last ``last`` windows after the first ``skip``; only those taken alone / beside others, if asked."""
        return [r for r in self.records[skip:] if alone is None or r["alone"] == alone][-last:]

    def speed(self, skip: int, last: int = ALL, alone: Optional[bool] = None) -> Optional[float]:
        """The median img/s of those windows."""
        windows = self.windows(skip, last, alone)
        return statistics.median(r["img_per_s"] for r in windows) if windows else None

    def steady_speed(self, skip: int):
        """(img/s, whether taken alone): the median of the windows taken alone if there are any, else of all."""
        alone = self.speed(skip, alone=True)
        return (alone, True) if alone else (self.speed(skip), False)

    def seconds_left(self, speed: float) -> float:
        return (self.steps - self.step) * self.entry.batch_size / speed

    def stop(self, reason: str, clock: Clock) -> None:
        if self.status == "running":
            self.note, self.status, self.kill_at = reason, "stopping", clock.now() + 60
            self.proc.send_signal(signal.SIGTERM)  # train.pretrain checkpoints and exits 75

    def summary(self, skip: int) -> dict:
        steady = self.windows(skip)
        (t0, c0), (t1, c1) = self.cpu if len(self.cpu) == 2 else ((0, 0), (0, 0))
        return {
            "label": self.label, "recipe": self.entry.recipe, "seed": self.entry.seed, "mode": self.mode,
            "status": self.status, "note": self.note, "rc": self.rc, "step": self.step, "steps": self.steps,
            "batch_size": self.entry.batch_size, "started_s": self.started, "ended_s": self.ended,
            "first_window_s": self.records[0]["t"] if self.records else None, "loss_max_rel_diff": self.loss_diff,
            "img_per_s": self.speed(skip), "img_per_s_alone": self.speed(skip, alone=True),
            "img_per_s_beside_another": self.speed(skip, alone=False),
            "data_wait": statistics.median(r["data_wait"] for r in steady) if steady else None,
            "peak_mem_mib": max((max(r["peak_mem_mib"]) for r in self.records), default=None),
            "cpu_cores_busy": round((c1 - c0) / (t1 - t0), 2) if t1 > t0 else None,  # the process's own CPU time
        }


def _cpu_seconds(pid: int) -> Optional[float]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class GpuBusy:
    """nvidia-smi's utilization.gpu once a second, read in a thread, each sample under the phase it fell in."""

    def __init__(self):
        self.samples: List[tuple] = []  # (phase, percent)
        self.phase = "start"
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "1000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((self.phase, float(line.split(",")[0])))
            except ValueError:
                pass

    def close(self) -> Optional[Dict[str, dict]]:
        """{phase: {"busy": mean fraction, "samples": n}}; None without nvidia-smi."""
        if self.proc is None:
            return None
        self.proc.terminate()
        by_phase: Dict[str, List[float]] = {}
        for phase, value in self.samples:
            by_phase.setdefault(phase, []).append(value)
        return {p: {"busy": round(statistics.mean(v) / 100, 3), "samples": len(v)} for p, v in by_phase.items()}


# --- the draw --------------------------------------------------------------------------------------------------------
class Draw:
    def __init__(self, args, setting: Setting):
        self.args, self.setting = args, setting
        self.clock = Clock(args.budget_s, setting)
        started = datetime.datetime.now(datetime.timezone.utc)
        self.work = Path(args.work or ROOT / "runs" / f"draw-{started:%Y%m%d-%H%M%S}").resolve()
        self.logs = self.work / "logs"
        self.record = self.work / "releases.json"  # the draw's own release record ($LADDER_ZOO_RELEASES)
        self.info: dict = {"id": f"{started:%Y%m%dT%H%M%SZ}", "started": started.isoformat(), "tiny": args.tiny,
                           "budget_s": args.budget_s, "queue": str(args.queue), "setting": asdict(setting),
                           "deadlines_s": {}, "failures": [], "timings": {}}
        self.entries: List[Entry] = []
        self.runs: List[Run] = []  # every training process, the eager probe first
        self.eager: Optional[Run] = None
        self.releases: Dict[str, dict] = {}  # release name -> what became of its queue entry
        self.lock = threading.Lock()  # the release record: one export writes it at a time
        self.threads: List[threading.Thread] = []
        self.modes = list(setting.fast_modes)  # still in the running, fastest first
        self.mode_failures: Dict[str, str] = {}
        self.pairs_allowed = True
        self.gpu: Optional[GpuBusy] = None
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, "LADDER_ZOO_RELEASES": str(self.record),
                    "LADDER_ZOO_HUB_DIR": str(self.work / "hub"), "HF_HUB_OFFLINE": "1",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        if args.tiny:
            self.env.update(OMP_NUM_THREADS="1", LADDER_ZOO_CACHE=str(self.work / "cache"))

    def outcome(self, entry: Entry, status: str, **more) -> dict:
        """What became of a queue entry (draw.json's "releases", by release name; collect.py reads it)."""
        self.releases[entry.release] = {"recipe": entry.recipe, "seed": entry.seed, "status": status, **more}
        return self.releases[entry.release]

    def fail(self, text: str) -> None:
        self.info["failures"].append(text)
        say(f"FAILED: {text}", self.clock)

    # 1. the stack --------------------------------------------------------------------------------------------------
    def check_data(self) -> bool:
        """The data and the queue (no torch needed): the first half of the stack check."""
        data = ROOT / self.setting.data
        self.info["stack"] = {"cpus": os.cpu_count(), "data": self.setting.data, "data_found": data.exists(),
                              "data_bytes": data.stat().st_size if data.is_file() else None,
                              "disk_free_gib": round(shutil.disk_usage(self.work).free / 2**30, 1),
                              "commit": _git("rev-parse", "HEAD"),
                              "uncommitted_files": _count_lines(_git("status", "--porcelain"))}
        if not data.exists():
            self.info["stopped"] = (f"no data: {self.setting.data} is missing (put cifar10-jpeg.tar.gz in the "
                                    "checkout's data/ and carry it: run(..., carry=['data']))")
            return False
        self.entries = load_queue(self.args.queue, self.setting)
        return True

    def count_images(self) -> None:
        """The runs' lengths in steps, from the training images (counted beside the stack check)."""
        data = ROOT / self.setting.data
        self.info["n_train"] = n_train = count_train_images(data)
        for entry in self.entries:
            entry.total_steps = entry.epochs * (n_train // entry.batch_size)
        say(f"data: {self.setting.data}" + (f", {data.stat().st_size / 2**20:.1f} MiB" if data.is_file() else "")
            + f", {n_train} training images; queue: {len(self.entries)} entries queued", self.clock)

    def start_stack(self) -> subprocess.Popen:
        """Versions and the GPU, in a process of its own (the draw itself never initialises CUDA)."""
        return subprocess.Popen([sys.executable, "-c", STACK], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish_stack(self, proc: subprocess.Popen) -> bool:
        stack = self.info["stack"]
        try:
            out, err = proc.communicate(timeout=180)
            stack.update(json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 else
                         {"error": (err.strip().splitlines() or ["no output"])[-1]})
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as e:
            proc.kill()
            stack["error"] = repr(e)
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            smi = subprocess.run(query, capture_output=True, text=True)
            stack["nvidia_smi"] = smi.stdout.strip()
        self.info["timings"]["stack_s"] = round(self.clock.now(), 1)
        say("stack: " + ", ".join(f"{k} {stack.get(k)}" for k in ("python", "torch", "timm", "huggingface_hub", "gpu",
                                                                   "cuda_available", "cpus", "disk_free_gib")),
            self.clock)
        if "error" in stack:
            self.info["stopped"] = f"the stack check failed: {stack['error']}"
        elif self.setting.needs_gpu and not stack.get("cuda_available"):
            self.info["stopped"] = "no GPU: torch.cuda.is_available() is False (--tiny is the CPU check)"
        return "stopped" not in self.info

    # 2. the eager probe (the fastest mode's is the first run) ------------------------------------------------------
    def start_probe(self) -> None:
        entry = self.entries[0]
        self.eager = Run(entry, "none", self.work / "runs" / "probe-none", "probe-none", self.setting.probe_steps)
        self.runs.append(self.eager)
        self.eager.start(self.setting, self.env, self.clock, self.logs)
        self.probe_limit = max(60.0, self.clock.train_until / 3)
        say(f"probe: {entry.name}, {self.setting.probe_steps} steps, compile=none", self.clock)

    def watch_probe(self, beside: int) -> None:
        run = self.eager
        if run.poll(self.clock, beside, self.setting.poll_s) is None:
            if self.clock.now() - run.started > self.probe_limit:
                run.proc.kill()
            return
        run.status = "finished" if run.rc == 0 and run.step == run.steps else "failed"
        (run.out_dir / "last.pt").unlink(missing_ok=True)  # its end-of-run checkpoint: not needed
        speed, alone = self.eager_speed()
        if run.status == "failed" or speed is None:
            run.status = "failed"
            self.fail(f"eager probe: exit {run.rc} at step {run.step}: {_last_line(run.output)}; compiled modes' "
                      "losses go unchecked")
            return
        say(f"probe: compile=none {speed:,.0f} img/s" + ("" if alone else " (beside a run)"), self.clock)

    def eager_speed(self):
        """(img/s of the eager probe's steady windows, whether they were taken alone): the alone ones if any."""
        return self.eager.steady_speed(self.setting.skip_windows) if self.eager else (None, False)

    # 3. the runs ---------------------------------------------------------------------------------------------------
    def run_queue(self) -> None:
        s = self.setting
        pending = list(self.entries)
        running: List[Run] = []
        while True:
            started = self.started()
            processes = running + ([self.eager] if self.eager and self.eager.status == "running" else [])
            training = [r for r in processes if r.records]

            def beside(run):
                return sum(1 for r in training if r is not run)

            if self.eager and self.eager.status == "running":
                self.watch_probe(beside(self.eager))
            for run in list(running):
                self.watch(run, running, pending, beside(run))
            for new in [r for r in processes if r.records and r not in training]:  # it trained before it logged
                first = new.records[0]
                since = first["t"] - first["step"] * new.entry.batch_size / max(first["img_per_s"], 1e-9) - s.poll_s
                for other in processes:
                    if other is not new:
                        other.shared(since, self.clock.now())
            self.judge(running)
            while pending and len(running) < (s.max_parallel if self.pairs_allowed else 1) \
                    and (s.max_runs is None or started < s.max_runs):
                verdict, why = self.may_start(pending[0], running)
                if verdict == "wait":
                    break
                entry = pending.pop(0)
                if verdict == "skip":
                    self.outcome(entry, "not started", note=why)
                    say(f"{entry.name}: not started: {why}", self.clock)
                    continue
                mode = self.mode
                label = f"{entry.name}.{mode}"
                run = Run(entry, mode, self.work / "runs" / f"{entry.name}-s{entry.seed}.{mode}", label)
                run.start(s, self.env, self.clock, self.logs)
                self.runs.append(run)
                running.append(run)
                started = self.started()
                say(f"{entry.name}: started, compile={mode}, {entry.total_steps} steps ({why})", self.clock)
            probing = self.eager and self.eager.status == "running"
            self.phase(f"{len(running)} run(s)" + (" + eager probe" if probing else "") if running or probing
                       else "releasing")
            if not running and not probing and (not pending or s.max_runs is not None and started >= s.max_runs):
                break
            time.sleep(s.poll_s)
        for entry in pending:
            if entry.release not in self.releases:
                self.outcome(entry, "not started", note="--max-runs reached")

    @property
    def mode(self) -> str:
        """The compile mode the next run gets: the fastest still in the running, else eager."""
        return self.modes[0] if self.modes else "none"

    def started(self) -> int:
        """Queue entries started so far (a restart in another mode is the same entry), the probe aside."""
        return len({r.entry.index for r in self.runs if r is not self.eager})

    def may_start(self, entry: Entry, running: List[Run]):
        """("start" | "wait" | "skip", why) for the next queue entry."""
        s, now = self.setting, self.clock.now()
        if not all(r.confirmed and len(r.windows(s.skip_windows, s.decide_windows, alone=True)) == s.decide_windows
                   for r in running):
            return "wait", "the running one is not confirmed, or not judged alone yet"  # judge() first
        for r in running:
            left = r.seconds_left(r.speed(s.skip_windows, s.decide_windows, alone=True))
            if now + PAIR_SLACK * left > self.clock.train_until:
                return "wait", f"{r.entry.name} has too little time to spare for a run beside it"
        mode = self.mode
        measured = [r for r in self.runs if r.mode == mode and (r is not self.eager or mode == "none")]
        speeds = {r.entry.recipe: r.speed(s.skip_windows, alone=True) for r in measured}
        if not any(speeds.values()):
            if running:  # the running one's windows alone tell how fast this one can be: wait for them
                return "wait", "no img/s measured alone yet"
            speeds = {r.entry.recipe: r.speed(s.skip_windows) for r in measured}
        speeds = {k: v for k, v in speeds.items() if v}
        speed = speeds.get(entry.recipe) or (max(speeds.values()) * OPTIMISM if speeds else None)
        if speed is None:
            return "start", "the fastest mode's probe: nothing measured yet"
        startups = [r.records[0]["t"] - r.started for r in self.runs if r.records and r is not self.eager]
        needs = (min(startups) if startups else s.startup_s) + entry.total_steps * entry.batch_size / speed
        left = self.clock.train_until - now
        if needs > left:
            return "skip", f"cannot finish: ~{needs:.0f} s at {speed:,.0f} img/s, {max(0.0, left):.0f} s left to train"
        return "start", f"~{needs:.0f} s at {speed:,.0f} img/s of {left:.0f} s left to train"

    def watch(self, run: Run, running: List[Run], pending: List[Entry], beside: int) -> None:
        """A run's new windows, its mode's check against eager, its exit."""
        s = self.setting
        if run.poll(self.clock, beside, s.poll_s) is None:
            if not run.confirmed:
                self.check_mode(run)
            return
        running.remove(run)
        if run.rc == 0 and run.step == run.steps:
            run.status = "finished"
            say(f"{run.entry.name}: finished {run.steps} steps, {run.speed(s.skip_windows) or 0:,.0f} img/s",
                self.clock)
            thread = threading.Thread(target=self.release, args=(run,), daemon=True)
            thread.start()
            self.threads.append(thread)
        elif run.status == "stopping":
            run.status = "stopped"
            say(f"{run.entry.name}: stopped at step {run.step} of {run.steps} (exit {run.rc}): {run.note}", self.clock)
            self.outcome(run.entry, "stopped", note=run.note, step=run.step)
            if run.note.startswith("compile="):  # its mode differs from eager: the entry again, in the next mode
                pending.insert(0, run.entry)
        elif run.mode in self.modes and self.eager.status != "failed":  # the mode broke, where eager did not
            run.status = "failed"
            self.mode_failures[run.mode] = run.note = f"exit {run.rc} at step {run.step}: {_last_line(run.output)}"
            self.modes.remove(run.mode)
            say(f"{run.entry.name}: compile={run.mode} failed ({run.note}); next: compile="
                f"{self.mode}", self.clock)
            pending.insert(0, run.entry)
        else:
            run.status, run.note = "failed", f"exit {run.rc} at step {run.step}: {_last_line(run.output)}"
            self.fail(f"{run.entry.name}: {run.note}")
            self.outcome(run.entry, "failed", note=run.note)

    def check_mode(self, run: Run) -> None:
        """Confirm a run's mode once its first windows can be compared with the eager probe's (same recipe and
        seed); without such a probe, once it has run its first steady windows."""
        s, eager = self.setting, self.eager
        same = eager is not None and (eager.entry.recipe, eager.entry.seed) == (run.entry.recipe, run.entry.seed)
        if same and eager.status == "running":
            return  # wait for the reference
        reference = eager.records if same and eager.status == "finished" else []
        if len(run.records) < max(len(reference), s.skip_windows + s.decide_windows):
            return
        diffs = [abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(run.records, reference)]
        run.loss_diff = max(diffs, default=None)
        if run.loss_diff is not None and run.loss_diff > LOSS_TOLERANCE and run.mode != "none":
            self.mode_failures[run.mode] = f"window losses differ from eager's by up to {run.loss_diff:.1%}"
            if run.mode in self.modes:
                self.modes.remove(run.mode)
            run.stop(f"compile={run.mode}: its window losses differ from eager's by up to {run.loss_diff:.1%}",
                     self.clock)
            return
        run.confirmed = True
        if run.mode in self.modes:
            self.modes = self.modes[self.modes.index(run.mode):]
        checked = f"losses within {run.loss_diff:.2%} of eager's" if reference else "no eager losses to compare"
        say(f"{run.entry.name}: compile={run.mode} confirmed ({checked}); last windows "
            f"{run.speed(s.skip_windows, s.decide_windows) or 0:,.0f} img/s", self.clock)

    def judge(self, running: List[Run]) -> None:
        """Stop what cannot finish before the training deadline. Alone, a run at the median img/s of its last
        windows alone (with 10 % of slack). Of two, the newer when the older, at the img/s of its last windows,
        would not finish beside it, or when the newer would not finish even sped up once the older is done."""
        s, now, until = self.setting, self.clock.now(), self.clock.train_until
        for run in running:
            if now >= until:
                run.stop("the training time ran out", self.clock)
        if not running or not running[0].confirmed or running[0].status != "running":
            return
        older, newer = running[0], (running[1:] or [None])[0]
        alone = older.windows(s.skip_windows, s.decide_windows, alone=True)
        recent = older.windows(s.skip_windows, s.decide_windows)
        if newer is None and len(alone) == s.decide_windows:
            speed = older.speed(s.skip_windows, s.decide_windows, alone=True)
            left = older.seconds_left(speed)
            if now + 0.9 * left > until:
                older.stop(f"cannot finish: {left:.0f} s to go at {speed:,.0f} img/s, {until - now:.0f} s left",
                           self.clock)
        if newer is None or newer.status != "running" or len(recent) < s.decide_windows:
            return
        v_old = older.speed(s.skip_windows, s.decide_windows)
        left_old = older.seconds_left(v_old)
        if now + left_old > until:  # the newer slows it down, compiling or training
            self.pairs_allowed = False
            newer.stop(f"beside it, {older.entry.name} would not finish ({v_old:,.0f} img/s)", self.clock)
            return
        paired = newer.windows(s.skip_windows, s.decide_windows, alone=False)
        if not newer.confirmed or len(paired) < s.decide_windows:
            return
        left_new = newer.seconds_left(newer.speed(s.skip_windows, s.decide_windows, alone=False))
        speedup = max(1.0, (older.speed(s.skip_windows, alone=True) or v_old) / v_old)  # once the older is done
        finish = now + (left_new if left_new <= left_old else left_old + (left_new - left_old) / speedup)
        if finish > until:
            newer.stop(f"cannot finish beside {older.entry.name}: ~{finish - now:.0f} s to go, {until - now:.0f} s "
                       "left", self.clock)

    def phase(self, name: str) -> None:
        if self.gpu:
            self.gpu.phase = name

    # 4. the release of a finished run ------------------------------------------------------------------------------
    def release(self, run: Run) -> None:
        """Export (registered), evaluate, put the evaluation into the folder and the record. A failing stage keeps
        what the ones before it made: the registered folder and its record entry agree at every point."""
        s, entry = self.setting, run.entry
        info = self.outcome(entry, "finished", step=run.step, stages={})
        checkpoint, folder = str(run.out_dir / "last.pt"), self.work / "hub" / "ladder-zoo" / entry.release
        export = [checkpoint, "--out", str(folder), *EXPORT_FORMAT]
        with self.lock:
            ok = self.stage(info, entry, "export", ["-c", TINY_EXPORT, *export] if self.args.tiny else
                            ["-m", "train.export", *export, "--register"])
        if not ok:  # keep the weights at least: a plain export, no release
            shutil.rmtree(folder, ignore_errors=True)
            self.stage(info, entry, "export-unregistered", ["-m", "train.export", checkpoint, "--out",
                                                            str(self.work / "exports" / entry.release), *EXPORT_FORMAT])
            return
        info["status"] = "registered"
        evaluation = self.work / "eval" / entry.release
        left = self.clock.pack_at - s.margin_s - s.attach_s - self.clock.now()
        info["linear_epochs"] = linear = s.linear_epochs if left >= s.eval_s + s.linear_s else 0
        shutil.rmtree(evaluation, ignore_errors=True)
        if not self.stage(info, entry, "eval", ["-m", "train.eval", checkpoint, "--data", s.data, "--device", s.device,
                                                "--out", str(evaluation), "--linear-epochs", str(linear),
                                                *s.eval_args]):
            return
        found = sorted(evaluation.glob(f"{entry.model}@*.json"))
        if not found:
            self.fail(f"{entry.release}: train.eval wrote no {entry.model}@*.json")
            return
        info["eval_json"] = found[0].name
        with self.lock:
            saved = {p: p.read_bytes() for p in (folder / "config.json", folder / "README.md", self.record)}
            if self.stage(info, entry, "attach", ["-m", "train.export", str(folder), "--eval", str(found[0]),
                                                  "--register"]):
                info["status"] = "evaluated"
                return
            for path, data in saved.items():  # back to the registered export's: folder and record agree
                path.write_bytes(data)

    def stage(self, info: dict, entry: Entry, name: str, args: List[str]) -> bool:
        """``python ARGS`` with the draw's environment, output to logs/, stopped when the release time is up."""
        start = self.clock.now()
        timeout = self.clock.pack_at - start
        output = self.logs / f"{entry.release}.{name}.txt"
        if timeout < 5:
            rc, note = -1, "not run: the draw's time ran out"
        else:
            say(f"{entry.release}: {name}", self.clock)
            try:
                with open(output, "w") as out:
                    rc = subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, stdout=out,
                                        stderr=subprocess.STDOUT, timeout=timeout).returncode
                note = f"exit {rc}: {_last_line(output)}" if rc else ""
            except subprocess.TimeoutExpired:
                rc, note = -1, f"stopped after {timeout:.0f} s: the draw's time ran out"
        info["stages"][name] = {"seconds": round(self.clock.now() - start, 1), "rc": rc}
        if rc:
            info["stages"][name]["note"] = note
            self.fail(f"{entry.release}: {name}: {note}")
        return rc == 0

    # 5. the pack ---------------------------------------------------------------------------------------------------
    def pack(self, out: Path) -> List[Path]:
        """draw.tar.partNN (at most 15 MiB each) in ``out``, leaving room for summary.txt: at most 8 files and
        64 MiB in all. Too big, the lowest priorities are left out (``members``), and draw.json names them."""
        start = self.clock.now()
        for old in [*out.glob("draw.tar.part*"), out / "summary.txt"]:
            old.unlink(missing_ok=True)
        members = self.members()
        tar_path, manifest = self.work / "draw.tar", self.work / "draw.json"
        while True:
            self.info["timings"]["total_s"] = round(self.clock.now(), 1)
            manifest.write_text(json.dumps(self.info, indent=2) + "\n")
            with tarfile.open(tar_path, "w") as tar:
                for arcname, path, _ in [*members, ("draw.json", manifest, 0)]:
                    tar.add(path, arcname=f"draw/{arcname}", recursive=False)
            size = tar_path.stat().st_size
            parts = -(-size // PART_SIZE)
            if size <= MAX_TOTAL - 2**20 and parts <= MAX_FILES - 1:
                break
            lowest = max(p for _, _, p in members)
            if lowest <= 0:
                raise RuntimeError(f"the evaluations and records alone are {size / 2**20:.1f} MiB")
            left_out = [a for a, _, p in members if p == lowest]
            self.info.setdefault("left_out_of_the_pack", []).extend(left_out)
            members = [m for m in members if m[2] != lowest]
            say(f"pack: {size / 2**20:.1f} MiB is too much; left out {len(left_out)} file(s): {left_out[0]}, ... "
                "(draw.json names them)", self.clock)
        written = []
        with open(tar_path, "rb") as f:
            for i in range(parts):
                written.append(out / f"draw.tar.part{i:02d}")
                written[-1].write_bytes(f.read(PART_SIZE))
        self.info["timings"]["pack_s"] = round(self.clock.now() - start, 1)
        return written

    def members(self) -> List[tuple]:
        """(name in the tar, file, priority): when the pack is too big, the highest priority is left out first:
        plots (3), process outputs and eval tables (2), logs (1), then the Hub folders, the latest queue entry's
        first (0.5 + entry / 100); never the record, speed.json or the evaluations (0)."""
        w = self.work
        index = {e.release: e.index for e in self.entries}
        (w / "speed.json").write_text(json.dumps(self.speed(), indent=2) + "\n")
        (w / "draw.log").write_text("\n".join(LINES) + "\n")
        found = [("speed.json", w / "speed.json", 0), ("releases.json", self.record, 0),
                 ("draw.log", w / "draw.log", 1)]
        for path in sorted([*w.glob("hub/*/*/*"), *w.glob("exports/*/*")]):  # hub/ladder-zoo/NAME.TAG/FILE
            found.append((str(path.relative_to(w)), path, 0.5 + index.get(path.parent.name, 49) / 100))
        for pattern, priority in (("*.json", 0), ("*.md", 2), ("*.png", 3), ("*.safetensors", 3)):
            found += [(str(p.relative_to(w)), p, priority) for p in sorted(w.glob(f"eval/*/{pattern}"))]
        for run in self.runs:
            kind = {"finished": "", "stopped": ".stopped"}.get(run.status, f".{run.status}")
            found.append((f"logs/{run.label}{kind}.log.jsonl", run.out_dir / "log.jsonl", 1))
        found += [(f"logs/{p.name}", p, 2) for p in sorted(self.logs.glob("*.txt"))]
        return [m for m in found if m[1].is_file()]

    def speed(self) -> dict:
        s = self.setting
        eager, alone = self.eager_speed()
        fastest = next((r for r in self.runs if r.confirmed), None)
        fast = fastest.steady_speed(s.skip_windows)[0] if fastest else None
        stack = self.info.get("stack", {})
        return {
            "gpu": stack.get("gpu"),
            "stack": {k: stack.get(k) for k in ("python", "torch", "timm", "huggingface_hub", "cuda", "cpus")},
            "probe": {"recipe": self.entries[0].recipe if self.entries else None,
                      "eager": {"mode": "none", "img_per_s": eager, "steps": s.probe_steps,
                                "alone": alone},  # else beside the first run's steps
                      "fastest": fastest and {"mode": fastest.mode, "img_per_s": fast, "measured_on": fastest.label,
                                              "loss_max_rel_diff": fastest.loss_diff},
                      "ratio": round(fast / eager, 2) if fast and eager else None,
                      "modes_failed": self.mode_failures},
            "runs": [r.summary(s.skip_windows) for r in self.runs],
            "gpu_busy": self.gpu.close() if self.gpu else None,
            "timings": self.info["timings"],
            "finished": [r.entry.release for r in self.runs if r.status == "finished" and r is not self.eager],
        }

    def table(self) -> str:
        s = self.setting
        rows = [f"{'run':<48} {'compile':<15} {'img/s':>7} {'steps':>13}  {'result':<10} {'top-level kNN / linear'}"]
        for run in self.runs:
            release = self.releases.get(run.entry.release, {}) if run.status == "finished" and run is not self.eager \
                else {}
            figures = _figures(self.work / "eval" / run.entry.release / release.get("eval_json", "-"))
            result = "probe" if run is self.eager else release.get("status", run.status)
            rows.append(f"{run.label.split('.')[0]:<48} {run.mode:<15} {run.speed(s.skip_windows) or 0:>7,.0f} "
                        f"{f'{run.step}/{run.steps}':>13}  {result:<10} {figures}")
        for name, r in self.releases.items():
            if r["status"] == "not started":
                rows.append(f"{Path(r['recipe']).stem:<48} {'-':<15} {'-':>7} {'-':>13}  {'not run':<10} {r['note']}")
        return "\n".join(rows)


def _figures(path: Path) -> str:
    if not path.is_file():
        return "-"
    result = json.loads(path.read_text())
    level, knn = list(result["knn"]["accuracy"].items())[-1]
    linear = list(result.get("linear", {}).get("accuracy", {}).values())
    return f"{level} {100 * knn:.1f} / " + (f"{100 * linear[-1]:.1f}" if linear else "-")


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1][-300:] if lines else "no output"


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _count_lines(text: Optional[str]) -> Optional[int]:
    return None if text is None else len(text.splitlines())


def _sha256(path: Path) -> str:  # ladder_zoo.hub.sha256_file's: this orchestrator imports no torch
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(prog="examples/gpu/draw.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the returned files go ($OUT)")
    parser.add_argument("--budget-s", type=float, help="seconds from the start to the last file written (default "
                                                        "540; --tiny 300)")
    parser.add_argument("--queue", type=Path, default=ROOT / "examples" / "gpu" / "queue.yaml")
    parser.add_argument("--tiny", action="store_true", help="every stage on the CPU, tiny (tests/test_draw.py)")
    parser.add_argument("--work", type=Path, help="the draw's run folders (default runs/draw-<UTC time>)")
    parser.add_argument("--max-runs", type=int, help="start at most this many queue entries (--tiny: 2)")
    args = parser.parse_args()
    setting = TINY if args.tiny else GPU
    if args.max_runs is not None:  # a copy: GPU and TINY stay as written
        setting = replace(setting, max_runs=args.max_runs)
    args.budget_s = args.budget_s or (300.0 if args.tiny else 540.0)
    args.out.mkdir(parents=True, exist_ok=True)
    draw = Draw(args, setting)
    draw.logs.mkdir(parents=True, exist_ok=True)
    draw.record.write_text("{}\n")
    draw.info["deadlines_s"] = {"train_until": draw.clock.train_until, "pack_at": draw.clock.pack_at}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: draw.clock.abort())
    say(f"draw {draw.info['id']}: budget {args.budget_s:.0f} s, training until {draw.clock.train_until:.0f} s, "
        f"work {draw.work}", draw.clock)
    try:
        if draw.check_data():
            draw.gpu = GpuBusy()
            stack = draw.start_stack()
            if draw.entries:
                draw.start_probe()  # beside the stack check: it ends before the probe's first step
            draw.count_images()
            if draw.finish_stack(stack) and draw.entries:
                draw.run_queue()
                draw.info["timings"]["runs_end_s"] = round(draw.clock.now(), 1)
            for thread in draw.threads:
                thread.join(timeout=max(1.0, draw.clock.pack_at - draw.clock.now()))
    except Exception as e:  # pack whatever finished, and say what broke
        draw.fail(f"the draw broke: {type(e).__name__}: {e}")
    for run in draw.runs:  # the probe after a failed stack check, or anything left by a break
        if run.proc and run.proc.poll() is None:
            run.proc.kill()
    if "stopped" in draw.info:
        say(f"draw: stopped: {draw.info['stopped']}", draw.clock)
    draw.info["releases"] = draw.releases
    draw.info["runs"] = [r.summary(setting.skip_windows) for r in draw.runs]
    table = draw.table()
    try:
        parts = draw.pack(args.out)
    except Exception as e:  # summary.txt still says what happened
        draw.fail(f"the pack broke: {type(e).__name__}: {e}")
        parts = []
    summary = [f"draw {draw.info['id']} on {draw.info['stack'].get('gpu') or 'the CPU'}, "
               f"{draw.clock.now():.0f} s of {args.budget_s:.0f}"
               + (" (--tiny: no release)" if args.tiny else ""), table, ""]
    summary += [f"part {p.name} {p.stat().st_size} {_sha256(p)}" for p in parts]
    summary += [f"failed: {f}" for f in draw.info["failures"]] or ["failed: nothing"]
    summary += [f"stopped: {draw.info['stopped']}"] if "stopped" in draw.info else []
    (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
    files = list(args.out.iterdir())
    say(f"returned: {len(files)} files, {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB in {args.out}; "
        "install them with python examples/gpu/collect.py DIR", draw.clock)
    print("\n".join(summary), flush=True)
    return 2 if "stopped" in draw.info else 0


if __name__ == "__main__":
    sys.exit(main())
