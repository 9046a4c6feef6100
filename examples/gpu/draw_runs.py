"""The runs of a GPU draw (examples/gpu/draw.py): each train.pretrain process and what its log.jsonl says (Run),
the GPU's busy fraction (GpuBusy), and the judge that decides which run starts, which compile mode it gets, and
which is stopped because it cannot finish (Judge)."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

from draw_plan import LOSS_TOLERANCE, OPTIMISM, PAIR_SLACK, ROOT, Clock, Entry, Journal, Setting, last_line

ALL = 10**9  # every window


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
        self.late = False  # it will finish after the evaluation window: exported and registered only
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

    def summary(self) -> Optional[Dict[str, dict]]:
        """{phase: {"busy": mean fraction, "samples": n}}; None without nvidia-smi."""
        if self.proc is None:
            return None
        by_phase: Dict[str, List[float]] = {}
        for phase, value in list(self.samples):
            by_phase.setdefault(phase, []).append(value)
        return {p: {"busy": round(statistics.mean(v) / 100, 3), "samples": len(v)} for p, v in by_phase.items()}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


class Judge:
    """Which queue entry starts (``may_start``), in which compile mode (``mode``: the fastest still in the
    running), whether a compiled mode's losses match eager's (``check_mode``), and which run is stopped because it
    cannot finish (``judge``). Deadlines (draw_plan.Clock): a run alone must finish training by ``finish_by`` (then
    it is exported and registered; after ``eval_by`` without GPU evaluation); a run beside another, by ``eval_by``."""

    def __init__(self, setting: Setting, clock: Clock, journal: Journal):
        self.setting, self.clock, self.journal = setting, clock, journal
        self.runs: List[Run] = []  # every training process, the eager probe first
        self.eager: Optional[Run] = None
        self.modes = list(setting.fast_modes)  # still in the running, fastest first
        self.mode_failures: Dict[str, str] = {}
        self.pairs_allowed = True

    @property
    def mode(self) -> str:
        """The compile mode the next run gets: the fastest still in the running, else eager."""
        return self.modes[0] if self.modes else "none"

    def started(self) -> int:
        """Queue entries started so far (a restart in another mode is the same entry), the probe aside."""
        return len({r.entry.index for r in self.runs if r is not self.eager})

    def eager_speed(self):
        """(img/s of the eager probe's steady windows, whether they were taken alone): the alone ones if any."""
        return self.eager.steady_speed(self.setting.skip_windows) if self.eager else (None, False)

    def may_start(self, entry: Entry, running: List[Run]):
        """("start" | "wait" | "skip", why) for the next queue entry."""
        s, now = self.setting, self.clock.now()
        if not all(r.confirmed and len(r.windows(s.skip_windows, s.decide_windows, alone=True)) == s.decide_windows
                   for r in running):
            return "wait", "the running one is not confirmed, or not judged alone yet"  # judge() first
        for r in running:
            left = r.seconds_left(r.speed(s.skip_windows, s.decide_windows, alone=True))
            if now + PAIR_SLACK * left > self.clock.eval_by:
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
        needs = (min(startups) if startups else s.startup_s) + entry.images / speed
        deadline = self.clock.eval_by if running else self.clock.finish_by  # alone, it may skip the GPU evaluation
        left = deadline - now
        if needs > left:
            return "skip", f"cannot finish: ~{needs:.0f} s at {speed:,.0f} img/s, {max(0.0, left):.0f} s left to train"
        return "start", f"~{needs:.0f} s at {speed:,.0f} img/s of {left:.0f} s left to train"

    def exited(self, run: Run) -> str:
        """What a run's exit means: "finished", "stopped", "retry" (its mode broke or differed from eager: the
        entry again, in the next mode) or "failed"; the mode's failure is recorded."""
        if run.rc == 0 and run.step == run.steps:
            run.status = "finished"
            return "finished"
        if run.status == "stopping":
            run.status = "stopped"
            return "retry" if run.note.startswith("compile=") else "stopped"
        run.status = "failed"
        run.note = f"exit {run.rc} at step {run.step}: {last_line(run.output)}"
        if run.mode in self.modes and self.eager.status != "failed":  # the mode broke, where eager did not
            self.mode_failures[run.mode] = run.note
            self.modes.remove(run.mode)
            return "retry"
        return "failed"

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
            self.stop(run, f"compile={run.mode}: its window losses differ from eager's by up to {run.loss_diff:.1%}")
            return
        run.confirmed = True
        if run.mode in self.modes:
            self.modes = self.modes[self.modes.index(run.mode):]
        checked = f"losses within {run.loss_diff:.2%} of eager's" if reference else "no eager losses to compare"
        self.journal.say(f"{run.entry.name}: compile={run.mode} confirmed ({checked}); last windows "
                         f"{run.speed(s.skip_windows, s.decide_windows) or 0:,.0f} img/s")

    def judge(self, running: List[Run]) -> None:
        """Stop what cannot finish. Alone, a run at the median img/s of its last windows alone must finish by
        ``finish_by`` (after ``eval_by`` it is marked late: exported and registered without GPU evaluation). Of
        two, the newer is stopped when the older, at the img/s of its last windows, would not finish by
        ``eval_by`` beside it, or when the newer would not, even sped up once the older is done."""
        s, now, clock = self.setting, self.clock.now(), self.clock
        for run in running:
            if now >= clock.finish_by:
                self.stop(run, "the training time ran out")
        if not running or not running[0].confirmed or running[0].status != "running":
            return
        older, newer = running[0], (running[1:] or [None])[0]
        alone = older.windows(s.skip_windows, s.decide_windows, alone=True)
        recent = older.windows(s.skip_windows, s.decide_windows)
        if newer is None and len(alone) == s.decide_windows:
            speed = older.speed(s.skip_windows, s.decide_windows, alone=True)
            left = older.seconds_left(speed)
            if now + left > clock.finish_by:
                self.stop(older, f"cannot finish: {left:.0f} s to go at {speed:,.0f} img/s, "
                                 f"{clock.finish_by - now:.0f} s left")
            elif now + left > clock.eval_by and not older.late:
                older.late = True
                self.journal.say(f"{older.entry.name}: finishes in ~{left:.0f} s, after the evaluation window: it "
                                 "will be exported and registered, and evaluated on the CPU later")
        if newer is None or newer.status != "running" or len(recent) < s.decide_windows:
            return
        v_old = older.speed(s.skip_windows, s.decide_windows)
        left_old = older.seconds_left(v_old)
        if now + left_old > clock.eval_by:  # the newer slows it down, compiling or training
            self.pairs_allowed = False
            self.stop(newer, f"beside it, {older.entry.name} would not finish ({v_old:,.0f} img/s)")
            return
        paired = newer.windows(s.skip_windows, s.decide_windows, alone=False)
        if not newer.confirmed or len(paired) < s.decide_windows:
            return
        left_new = newer.seconds_left(newer.speed(s.skip_windows, s.decide_windows, alone=False))
        speedup = max(1.0, (older.speed(s.skip_windows, alone=True) or v_old) / v_old)  # once the older is done
        finish = now + (left_new if left_new <= left_old else left_old + (left_new - left_old) / speedup)
        if finish > clock.eval_by:
            self.stop(newer, f"cannot finish beside {older.entry.name}: ~{finish - now:.0f} s to go, "
                             f"{clock.eval_by - now:.0f} s left")

    def stop(self, run: Run, reason: str) -> None:
        """SIGTERM to a run (it checkpoints and exits 75), said once."""
        if run.status == "running":
            run.stop(reason, self.clock)
            self.journal.say(f"{run.entry.name}: stopping: {reason}")
