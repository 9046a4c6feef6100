"""The release of each finished run of a GPU draw (examples/gpu/draw.py), in a thread while other runs train:
``train.export --register`` (fp16, 15 MB shards) into the draw's own release record ($LADDER_ZOO_RELEASES),
``train.eval`` of the checkpoint on the GPU (kNN per level; the linear probe only if the time left allows; no
evaluation at all for a run that finished after the evaluation window), then ``train.export FOLDER --eval
EVAL.json --register``. Each stage is a process of its own session, stopped when the pack begins: ``end`` stops
them all and waits for every thread, so that nothing writes while the pack reads."""
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

from draw_plan import EXPORT_FORMAT, ROOT, Clock, Journal, Setting, last_line
from draw_runs import Run

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
RELEASED = ("registered", "evaluated")  # a release whose Hub folder and record entry agree: packed, installed


class Releaser:
    """The release threads of a draw; ``hub`` holds the registered folders, ``record`` their entries."""

    def __init__(self, setting: Setting, clock: Clock, journal: Journal, work: Path, env: dict, tiny: bool):
        self.setting, self.clock, self.journal, self.env, self.tiny = setting, clock, journal, env, tiny
        self.work, self.logs, self.record = work, work / "logs", work / "releases.json"
        self.lock = threading.Lock()  # the release record: one export writes it at a time
        self.threads: List[threading.Thread] = []
        self.stages: Dict[int, subprocess.Popen] = {}  # running stage processes, by pid
        self.ended = False

    def start(self, run: Run) -> None:
        thread = threading.Thread(target=self.release, args=(run,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def end(self, timeout: float = 30.0) -> None:
        """Stop every stage still running and wait for the threads (each restores what its stage left half
        done); a thread still alive after ``timeout`` keeps its release out of the pack."""
        self.ended = True
        for proc in list(self.stages.values()):
            _kill_session(proc)
        for thread in self.threads:
            thread.join(timeout)
        for name, release in self.journal.releases.items():
            if release.get("releasing"):
                release["status"] = "unfinished"
                self.journal.fail(f"{name}: its release thread did not end: left out of the pack")

    def release(self, run: Run) -> None:
        """Export (registered), evaluate, put the evaluation into the folder and the record. A failing stage keeps
        what the ones before it made: the registered folder and its record entry agree at every point."""
        info = self.journal.outcome(run.entry, "finished", step=run.step, stages={}, releasing=True)
        try:
            self._release(run, info)
        finally:
            info.pop("releasing")

    def _release(self, run: Run, info: dict) -> None:
        s, entry = self.setting, run.entry
        checkpoint, folder = str(run.out_dir / "last.pt"), self.work / "hub" / "ladder-zoo" / entry.release
        export = [checkpoint, "--out", str(folder), *EXPORT_FORMAT]
        with self.lock:
            ok = self.stage(info, entry, "export", ["-c", TINY_EXPORT, *export] if self.tiny else
                            ["-m", "train.export", *export, "--register"])
        if not ok:  # keep the weights at least: a plain export, no release
            shutil.rmtree(folder, ignore_errors=True)
            self.stage(info, entry, "export-unregistered", ["-m", "train.export", checkpoint, "--out",
                                                            str(self.work / "exports" / entry.release), *EXPORT_FORMAT])
            return
        info["status"] = "registered"
        left = self.clock.pack_at - s.margin_s - s.attach_s - self.clock.now()
        if left < s.eval_s:
            info["note"] = (f"no time left to evaluate on the GPU ({left:.0f} s): python -m train.eval "
                            f"hub/ladder-zoo/{entry.release} --data {s.data}, then train.export FOLDER --eval "
                            "JSON --register")
            self.journal.say(f"{entry.release}: registered; {info['note']}")
            return
        evaluation = self.work / "eval" / entry.release
        info["linear_epochs"] = linear = s.linear_epochs if left >= s.eval_s + s.linear_s else 0
        shutil.rmtree(evaluation, ignore_errors=True)
        if not self.stage(info, entry, "eval", ["-m", "train.eval", checkpoint, "--data", s.data, "--device", s.device,
                                                "--out", str(evaluation), "--linear-epochs", str(linear),
                                                *s.eval_args]):
            return
        found = sorted(evaluation.glob(f"{entry.model}@*.json"))
        if not found:
            self.journal.fail(f"{entry.release}: train.eval wrote no {entry.model}@*.json")
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

    def stage(self, info: dict, entry, name: str, args: List[str]) -> bool:
        """``python ARGS`` with the draw's environment in a session of its own, output to logs/, stopped when
        the pack begins."""
        start = self.clock.now()
        timeout = self.clock.pack_at - start
        output = self.logs / f"{entry.release}.{name}.txt"
        if timeout < 5 or self.ended:
            rc, note = -1, "not run: the draw's time ran out"
        else:
            self.journal.say(f"{entry.release}: {name}")
            with open(output, "w") as out:
                proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self.stages[proc.pid] = proc
            try:
                rc = proc.wait(timeout=timeout)
                note = f"exit {rc}: {last_line(output)}" if rc else ""
            except subprocess.TimeoutExpired:
                _kill_session(proc)
                rc, note = -1, f"stopped after {timeout:.0f} s: the draw's time ran out"
            finally:
                self.stages.pop(proc.pid, None)
            if rc and self.ended:
                note = "stopped: the pack began"
        info["stages"][name] = {"seconds": round(self.clock.now() - start, 1), "rc": rc}
        if rc:
            info["stages"][name]["note"] = note
            self.journal.fail(f"{entry.release}: {name}: {note}")
        return rc == 0


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL to the stage's whole session (train.eval's data workers included), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
