"""The plan of a GPU draw (examples/gpu/draw.py): its settings, its time budget and the deadlines that follow, the
queue, and the journal every part writes to. No torch here: the draw's own process never initialises CUDA.

The budget (seconds; `python examples/gpu/draw.py --plan` prints it with the H100 figures it rests on). A
session holds the device machine for DEVICE_S in all, its start included; one command lasts at most CALL_S; the
machine goes back 30 s after a call returns unless the next one comes. So the draw is two calls: call 1 starts
the draw's process in a session of its own (setsid), which outlives the command, and returns at CALL1_S; call 2,
made at once, returns at END_S, when that process has packed what it did. Times count from call 1's start:

    END_S   = DEVICE_S - START_S - TRANSFER_S          (the files are final; at most 2 x (CALL_S - CALL_MARGIN_S))
    CALL1_S = END_S - (CALL_S - CALL_MARGIN_S)         (call 2, even if it starts at once, ends within CALL_S)
    PACK_AT   = END_S - PACK_S - COPY_S                (every release stage has ended; the pack begins)
    FINISH_BY = PACK_AT - MARGIN_S - EXPORT_S          (a run ending later cannot be exported: never started)
    EVAL_BY   = FINISH_BY - EVAL_S - ATTACH_S          (a run ending later is exported and registered only)
"""
import importlib.util
import json
import statistics
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from train.config import Config, read_recipe  # noqa: E402  (the checkout's; plain YAML, no torch)

PART_SIZE = 15 * 2**20  # bytes per returned part
MAX_FILES, MAX_TOTAL = 8, 64 * 2**20  # what comes back from $OUT
RETURNED_BESIDE_PARTS = ("summary.txt", "speed.json")  # the provisional record, then the final one
EXPORT_FORMAT = ["--dtype", "fp16", "--max-shard-size", "15MB"]  # train.export: every shard fits in a part
OPTIMISM = 1.25  # an entry not measured yet is taken to be at most this much faster than the fastest run measured
PAIR_SLACK = 1.25  # a second run starts beside one only if that one would finish even this much slower
LOSS_TOLERANCE = 0.05  # largest relative difference of a compiled mode's window losses from eager's
CIFAR10_TRAIN = 50_000  # images of CIFAR-10's train split, the queue's data, before the draw counts them
H100 = ROOT / "results" / "h100_2026-11-23"  # the first GPU run, the figures the plan rests on


@dataclass
class Setting:
    """What differs between a real draw (GPU) and --tiny (CPU). The *_s are seconds: the device tool's limits,
    then the plan's estimates of each stage (a run's own start is measured as soon as one has started)."""

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
    device_s: float  # device time of the session, the machine's start included
    start_s: float  # the machine's start, before call 1's command (the device tool: 1-2 minutes)
    transfer_s: float  # the tree sent for call 2 and call 1's files back
    call_s: float  # one command's limit
    call_margin_s: float  # a call returns this long before its limit
    startup_s: float  # a run's start until its first step (imports, data, compilation), until one is measured
    export_s: float
    eval_s: float  # the kNN evaluation
    linear_s: float  # the linear probe on top of it
    attach_s: float
    pack_s: float
    copy_s: float  # the pack copied into $OUT
    margin_s: float
    poll_s: float
    progress_s: float  # the provisional record is rewritten at least this often
    max_parallel: int
    max_runs: Optional[int]

    @property
    def end_s(self) -> float:
        return min(self.device_s - self.start_s - self.transfer_s, 2 * (self.call_s - self.call_margin_s))

    @property
    def call1_s(self) -> float:
        return max(0.0, self.end_s - (self.call_s - self.call_margin_s))


GPU = Setting(
    data="data/cifar10-jpeg.tar.gz", device="cuda", needs_gpu=True, overrides=[],
    fast_modes=["reduce-overhead", "default"], probe_steps=300, log_every=50, skip_windows=2, decide_windows=3,
    eval_args=["--workers", "8"], linear_epochs=100, device_s=900, start_s=120, transfer_s=20, call_s=600,
    call_margin_s=10, startup_s=120, export_s=20, eval_s=50, linear_s=60, attach_s=10, pack_s=15, copy_s=5,
    margin_s=15, poll_s=1.0, progress_s=5.0, max_parallel=2, max_runs=None,
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
    device_s=330, start_s=0, transfer_s=0, call_s=300, call_margin_s=10, startup_s=10, export_s=10, eval_s=15,
    linear_s=0, attach_s=10, pack_s=5, copy_s=1, margin_s=5, poll_s=0.2, progress_s=0.5, max_parallel=2, max_runs=2,
)


def setting_for(tiny: bool, device_s: Optional[float] = None, max_runs: Optional[int] = None) -> Setting:
    """GPU or TINY, with the device time left and --max-runs where given (a copy: GPU and TINY stay as written)."""
    setting = TINY if tiny else GPU
    changes = {k: v for k, v in (("device_s", device_s), ("max_runs", max_runs)) if v is not None}
    return replace(setting, **changes) if changes else setting


class Clock:
    """Seconds since call 1 began (``t0``: time.monotonic() of that process; one clock for every process of the
    machine), and the draw's deadlines in those seconds."""

    def __init__(self, setting: Setting, t0: Optional[float] = None):
        s = setting
        self.t0 = time.monotonic() if t0 is None else t0
        self.end = s.end_s
        self.pack_at = s.end_s - s.pack_s - s.copy_s
        self.finish_by = self.pack_at - s.margin_s - s.export_s
        self.eval_by = self.finish_by - s.eval_s - s.attach_s

    def now(self) -> float:
        return time.monotonic() - self.t0

    def abort(self) -> None:
        """The draw got SIGTERM / SIGINT: the runs stop now, what finished is exported and packed."""
        self.finish_by = self.eval_by = min(self.eval_by, self.now())

    def deadlines(self) -> Dict[str, float]:
        return {k: round(getattr(self, k), 1) for k in ("eval_by", "finish_by", "pack_at", "end")}


class Journal:
    """What the draw printed (draw.log), knew (draw.json's info) and did with each queue entry (``releases``),
    shared by its parts; the release threads write to it too."""

    def __init__(self, clock: Clock, info: dict):
        self.clock, self.info = clock, info
        self.lines: List[str] = []
        self.releases: Dict[str, dict] = {}  # release name -> what became of its queue entry
        self.events = 0  # lines said: the provisional record is rewritten when it grows
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        line = f"[{self.clock.now():6.1f}s] {text}"
        with self.lock:
            self.lines.append(line)
            self.events += 1
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def fail(self, text: str) -> None:
        self.info["failures"].append(text)
        self.say(f"FAILED: {text}")

    def outcome(self, entry: "Entry", status: str, **more) -> dict:
        """What became of a queue entry (draw.json's "releases", by release name; collect.py reads it)."""
        self.releases[entry.release] = {"recipe": entry.recipe, "seed": entry.seed, "status": status, **more}
        return self.releases[entry.release]


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

    def count(self, n_train: int) -> None:
        self.total_steps = self.epochs * (n_train // self.batch_size)

    @property
    def images(self) -> int:
        return self.total_steps * self.batch_size


def load_queue(path: Path, setting: Setting, queued_only: bool = True) -> List[Entry]:
    """The entries whose status is exactly `queued` (every entry: ``queued_only=False``), with their recipe's
    name, model, tag, epochs and batch."""
    entries = []
    for i, item in enumerate(yaml.safe_load(path.read_text()) or []):
        if queued_only and str(item.get("status", "")).strip() != "queued":
            continue
        values = read_recipe(ROOT / item["recipe"], setting.overrides)  # its _base_ files included
        name, model = values["name"], values["model"]
        if not name.startswith(model + "_"):
            raise ValueError(f"{item['recipe']}: its name {name} is not <model>_<tag>")
        entries.append(Entry(i, item["recipe"], int(item.get("seed", 0)), name, model, name[len(model) + 1:],
                             int(values.get("epochs", Config.epochs)), int(values.get("batch_size", Config.batch_size))))
    return entries


def last_line(path: Path) -> str:
    """The last non-empty line of a process's output file (what a failure is named by)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1][-300:] if lines else "no output"


def image_suffixes() -> tuple:
    """ladder_zoo/image_files.py's IMAGE_SUFFIXES, that file loaded alone (the package's __init__ imports torch)."""
    spec = importlib.util.spec_from_file_location("image_files", ROOT / "ladder_zoo" / "image_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.IMAGE_SUFFIXES


def count_train_images(data: Path) -> int:
    """Images of the train split (train.data.ImageFolder's rule: train/<class>/<image>), without decoding."""
    suffixes = image_suffixes()
    if data.is_dir():
        return sum(1 for p in (data / "train").glob("*/*") if p.suffix.lower() in suffixes)
    with tarfile.open(data, "r:*") as tar:
        names = [m.name[2:] if m.name.startswith("./") else m.name for m in tar if m.isfile()]
    return sum(1 for n in names if n.startswith("train/") and n.count("/") == 2 and n.lower().endswith(suffixes))


# --- the plan, printed by --plan ------------------------------------------------------------------------------------
@dataclass
class H100Figures:
    """The first GPU run's figures (results/h100_2026-11-23: BYOL, old recipe, batch 256, compile=default), from
    its committed logs; ``gpu_busy`` is its README's nvidia-smi reading (39 % alone, 97-99 % with two runs)."""

    mean: float  # img/s over the whole run
    alone: float  # median img/s of its windows after step 4,000 (the GPU to itself)
    beside: float  # median img/s of its windows beside Ladder-BYOL (steps 450-3,400)
    ladder_beside: float  # Ladder-BYOL's median beside it, its first two windows left out
    first_window_s: float  # its first 50 steps, compilation included
    batch: int = 256
    gpu_busy: float = 0.39

    @classmethod
    def read(cls, folder: Path = H100) -> "H100Figures":
        byol, ladder = ([json.loads(line) for line in (folder / name).read_text().splitlines()] for name in (
            "byol_r18_cifar_cifar10_200ep.log.jsonl", "ladder_byol_r18_cifar_cifar10_200ep.stopped.log.jsonl"))
        steps = [0] + [r["step"] for r in byol]
        seconds = [(b["step"] - a) * 256 / b["img_per_s"] for a, b in zip(steps, byol)]
        return cls(mean=byol[-1]["step"] * 256 / sum(seconds),
                   alone=statistics.median(r["img_per_s"] for r in byol if r["step"] > 4000),
                   beside=statistics.median(r["img_per_s"] for r in byol if 400 < r["step"] <= 3400),
                   ladder_beside=statistics.median(r["img_per_s"] for r in ladder[2:]), first_window_s=seconds[0])


def plan_text(setting: Setting, entries: List[Entry], h100: H100Figures, data_note: str) -> str:
    """The budget arithmetic of a draw: the device calls, the seconds of each stage, the img/s each run of the
    queue needs, and the H100 figures they compare with."""
    s, clock = setting, Clock(setting, t0=0.0)
    first_step = s.startup_s + 10  # the stack check (10 s) before the first run's start
    train_eval, train_export = clock.eval_by - first_step, clock.finish_by - first_step
    lines = [
        f"device time {s.device_s:.0f} s = machine start {s.start_s:.0f} (assumed: the device tool says 1-2 min)"
        f" + the draw {s.end_s:.0f} + transfers {s.transfer_s:.0f}",
        f"call 1: run(command='PYTHONUNBUFFERED=1 python3 examples/gpu/draw.py --start --out \"$OUT\"', "
        f"carry=['data'], timeout_s={s.call1_s + 30:.0f})",
        f"        returns {s.call1_s:.0f} s after it began; the draw's process (setsid) goes on",
        f"call 2: run(command='PYTHONUNBUFFERED=1 python3 examples/gpu/draw.py --finish --out \"$OUT\"', "
        f"timeout_s={s.call_s:.0f})",
        f"        at once (within 30 s, or the machine goes back); returns {s.end_s:.0f} s after call 1 began",
        "",
        "seconds after call 1 began:",
        "  0-10     stack check and data count; the first run and the eager probe start beside it",
        f"  10-{first_step:.0f}   the first run's start: process, data, compilation, CUDA graph capture "
        f"({s.startup_s:.0f} s estimated)",
        f"  {first_step:.0f}-{clock.eval_by:.0f}  training: {train_eval:.0f} s for a run also evaluated on the GPU",
        f"  {clock.eval_by:.0f}-{clock.finish_by:.0f}  a run ending here is exported and registered, evaluated on "
        f"the CPU later ({train_export:.0f} s)",
        f"  then     export {s.export_s:.0f}, kNN evaluation {s.eval_s:.0f} (+ linear probe {s.linear_s:.0f} if time "
        f"is left), attach {s.attach_s:.0f},",
        f"           margin {s.margin_s:.0f}; pack at {clock.pack_at:.0f} ({s.pack_s:.0f} + copy {s.copy_s:.0f}); "
        f"files final at {clock.end:.0f}",
        "",
        f"img/s each run of the queue needs, with / without GPU evaluation ({data_note}):",
    ]
    for e in entries:
        lines.append(f"  {e.name:<49} {e.total_steps:>6,} x {e.batch_size} = {e.images / 1e6:.2f} M images: "
                     f"{e.images / train_eval:>6,.0f} / {e.images / train_export:>6,.0f}")
    if len(entries) >= 2:
        both = entries[0].images + entries[1].images
        lines.append(f"  the first two at once: {both / train_eval:,.0f} img/s in total")
    lines += [
        "",
        f"H100, 2026-11-23 (results/h100_2026-11-23: BYOL, batch {h100.batch}, compile=default, 39,000 steps):",
        f"  {h100.mean:,.0f} img/s over the run; alone (steps > 4,000) {h100.alone:,.0f}, "
        f"{1000 * h100.batch / h100.alone:.1f} ms per step, bound by the host",
        f"  (one core at 100 %, GPU {100 * h100.gpu_busy:.0f} % busy); compilation and the first 50 steps "
        f"{h100.first_window_s:.0f} s",
        f"  two at once: BYOL {h100.beside:,.0f} + Ladder-BYOL {h100.ladder_beside:,.0f} = "
        f"{h100.beside + h100.ladder_beside:,.0f} img/s (medians; GPU 97-99 % busy)",
        f"  inferred, not measured: batch 512 at that host time per step {2 * h100.alone:,.0f} img/s; the GPU, "
        f"{100 * h100.gpu_busy:.0f} % busy at",
        f"  {h100.alone:,.0f}, bounds one run near {h100.alone / h100.gpu_busy:,.0f} img/s "
        "(reduce-overhead removes most host time per step)",
    ]
    return "\n".join(lines) + "\n"
