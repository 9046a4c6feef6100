"""What a GPU draw (examples/gpu/draw.py) returns: the provisional record, rewritten as the draw goes (summary.txt
and speed.json, so that a command cut short still returns what was measured), then the pack: the Hub folders,
evaluations, each run's log.jsonl, the release record, the compile caches, speed.json and draw.json in one tar
split into draw.tar.part00, part01, ... of at most 15 MiB, and the final summary.txt (the parts' sha256 and the
table). The draw's process writes all of it into WORK/out; each device call mirrors that folder into its $OUT."""
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import List, Optional

from draw_plan import MAX_FILES, MAX_TOTAL, PART_SIZE, RETURNED_BESIDE_PARTS, ROOT, Clock, Entry, Journal, Setting
from draw_release import RELEASED
from draw_runs import GpuBusy, Judge

REPO_CACHE = ROOT / "examples" / "gpu" / "compile_cache"  # compile caches kept in the repository, by stack


class Report:
    """The draw's records (speed.json, summary.txt, draw.json) and its pack, from what its parts know."""

    def __init__(self, setting: Setting, clock: Clock, journal: Journal, judge: Judge, work: Path, tiny: bool):
        self.setting, self.clock, self.journal, self.judge, self.tiny = setting, clock, journal, judge, tiny
        self.work, self.out = work, work / "out"
        self.entries: List[Entry] = []
        self.gpu: Optional[GpuBusy] = None
        self.progress_at, self.progress_events, self.progress_failed = -1e9, -1, False

    # the provisional record ----------------------------------------------------------------------------------------
    def progress(self, force: bool = False) -> None:
        """summary.txt and speed.json, marked provisional, into WORK/out: after the stack check, after each event
        the journal records, and at least every ``progress_s`` while runs train."""
        now = self.clock.now()
        if not force and self.journal.events == self.progress_events and now - self.progress_at < \
                self.setting.progress_s:
            return
        self.progress_at, self.progress_events = now, self.journal.events
        head = (f"draw {self.journal.info['id']}: PROVISIONAL at {now:.0f} s of {self.clock.end:.0f} (the draw goes "
                "on; call 2 returns its pack)")
        try:  # a record that cannot be written never stops the draw
            self.out.mkdir(parents=True, exist_ok=True)
            write_atomic(self.out / "speed.json", json.dumps({**self.speed(), "provisional": True}, indent=2) + "\n")
            write_atomic(self.out / "summary.txt", "\n".join([head, self.table(), "", *self.failures(),
                                                              "last lines:", *self.journal.lines[-8:]]) + "\n")
        except OSError as e:
            if not self.progress_failed:
                self.journal.fail(f"the provisional record was not written: {e}")
            self.progress_failed = True

    # the pack ------------------------------------------------------------------------------------------------------
    def pack(self) -> List[Path]:
        """draw.tar.partNN (at most 15 MiB each) in WORK/out beside summary.txt and speed.json: at most 8 files and
        64 MiB in all. Too big, the lowest priorities are left out (``members``), and draw.json names them. Each
        file is read whole before it is added: one that cannot be read is left out and named, never half added."""
        start = self.clock.now()
        info = self.journal.info
        members, contents = self.members(), {}
        for arcname, path, _ in members:
            try:
                contents[arcname] = path.read_bytes()
            except OSError as e:
                self.journal.fail(f"pack: {arcname} unreadable ({e}): left out")
        members = [m for m in members if m[0] in contents]
        while True:
            info["timings"]["total_s"] = round(self.clock.now(), 1)
            contents["draw.json"] = (json.dumps(info, indent=2) + "\n").encode()
            data = _tar([(a, contents[a]) for a, _, _ in members] + [("draw.json", contents["draw.json"])])
            parts = -(-len(data) // PART_SIZE)
            if len(data) <= MAX_TOTAL - 2**20 and parts <= MAX_FILES - len(RETURNED_BESIDE_PARTS):
                break
            lowest = max(p for _, _, p in members)
            if lowest <= 0:
                raise RuntimeError(f"the evaluations and records alone are {len(data) / 2**20:.1f} MiB")
            left_out = [a for a, _, p in members if p == lowest]
            info.setdefault("left_out_of_the_pack", []).extend(left_out)
            members = [m for m in members if m[2] != lowest]
            self.journal.say(f"pack: {len(data) / 2**20:.1f} MiB is too much; left out {len(left_out)} file(s): "
                             f"{left_out[0]}, ... (draw.json names them)")
        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.out.glob("draw.tar.part*"):
            old.unlink()
        written = []
        for i in range(parts):  # each part complete before it has its name: a mirror never copies half of one
            written.append(self.out / f"draw.tar.part{i:02d}")
            write_atomic(written[-1], data[i * PART_SIZE:(i + 1) * PART_SIZE])
        info["timings"]["pack_s"] = round(self.clock.now() - start, 1)
        return written

    def members(self) -> List[tuple]:
        """(name in the tar, file, priority): when the pack is too big, the highest priority is left out first:
        plots (3), compile caches (2.5), process outputs and eval tables (2), logs (1), then the Hub folders, the
        latest queue entry's first (0.5 + entry / 100); never the record, speed.json or the evaluations (0). A Hub
        folder comes only with a release whose folder and record entry agree (registered or evaluated)."""
        w = self.work
        index = {e.release: e.index for e in self.entries}
        (w / "speed.json").write_text(json.dumps(self.speed(), indent=2) + "\n")
        (w / "draw.log").write_text("\n".join(self.journal.lines) + "\n")
        found = [("speed.json", w / "speed.json", 0), ("releases.json", w / "releases.json", 0),
                 ("draw.log", w / "draw.log", 1)]
        released = {name for name, r in self.journal.releases.items() if r["status"] in RELEASED}
        for path in sorted(w.glob("hub/*/*/*")):  # hub/ladder-zoo/NAME.TAG/FILE
            if path.parent.name in released:
                found.append((str(path.relative_to(w)), path, 0.5 + index.get(path.parent.name, 49) / 100))
        for path in sorted(w.glob("exports/*/*")):
            found.append((str(path.relative_to(w)), path, 0.5 + index.get(path.parent.name, 49) / 100))
        for pattern, priority in (("*.json", 0), ("*.md", 2), ("*.png", 3), ("*.safetensors", 3)):
            found += [(str(p.relative_to(w)), p, priority) for p in sorted(w.glob(f"eval/*/{pattern}"))]
        for run in self.judge.runs:
            kind = {"finished": "", "stopped": ".stopped"}.get(run.status, f".{run.status}")
            found.append((f"logs/{run.label}{kind}.log.jsonl", run.out_dir / "log.jsonl", 1))
        found += [(f"logs/{p.name}", p, 2) for p in sorted((w / "logs").glob("*.txt"))]
        found += [(f"compile_cache/{p.parent.name}/{p.name}", p, 2.5) for p in new_caches(w / "compile_cache")]
        return [m for m in found if m[1].is_file()]

    def finish(self, parts: List[Path]) -> str:
        """The final summary.txt and speed.json beside the parts; returns the summary."""
        speed = self.speed()
        summary = [f"draw {self.journal.info['id']} on {self.journal.info.get('stack', {}).get('gpu') or 'the CPU'}, "
                   f"{self.clock.now():.0f} s of {self.clock.end:.0f}" + (" (--tiny: no release)" if self.tiny else ""),
                   self.table(), ""]
        summary += [f"part {p.name} {p.stat().st_size} {sha256(p)}" for p in parts]
        summary += [f"bound: {label}: {what}" for label, what in speed["bound"].items()]
        summary += self.failures()
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "speed.json", json.dumps(speed, indent=2) + "\n")
        write_atomic(self.out / "summary.txt", "\n".join(summary) + "\n")
        return "\n".join(summary)

    def failures(self) -> List[str]:
        info = self.journal.info
        lines = [f"failed: {f}" for f in info["failures"]] or ["failed: nothing"]
        return lines + ([f"stopped: {info['stopped']}"] if "stopped" in info else [])

    # the records ---------------------------------------------------------------------------------------------------
    def speed(self) -> dict:
        s, judge = self.setting, self.judge
        eager, alone = judge.eager_speed()
        fastest = next((r for r in judge.runs if r.confirmed), None)
        fast = fastest.steady_speed(s.skip_windows)[0] if fastest else None
        stack = self.journal.info.get("stack", {})
        runs, busy = [r.summary(s.skip_windows) for r in judge.runs], self.gpu.summary() if self.gpu else None
        return {
            "gpu": stack.get("gpu"),
            "stack": {k: stack.get(k) for k in ("python", "torch", "triton", "timm", "huggingface_hub", "cuda",
                                                "cpus", "compile_cache")},
            "probe": {"recipe": self.entries[0].recipe if self.entries else None,
                      "eager": {"mode": "none", "img_per_s": eager, "steps": s.probe_steps,
                                "alone": alone},  # else beside the first run's steps
                      "fastest": fastest and {"mode": fastest.mode, "img_per_s": fast, "measured_on": fastest.label,
                                              "loss_max_rel_diff": fastest.loss_diff},
                      "ratio": round(fast / eager, 2) if fast and eager else None,
                      "modes_failed": judge.mode_failures},
            "runs": runs,
            "gpu_busy": busy,
            "bound": {r["label"]: what_bounded(r, busy) for r in runs if r["label"] != "probe-none" and r["img_per_s"]},
            "timings": self.journal.info["timings"],
            "deadlines_s": self.clock.deadlines(),
            "finished": [r.entry.release for r in judge.runs if r.status == "finished" and r is not judge.eager],
        }

    def table(self) -> str:
        s, judge, releases = self.setting, self.judge, self.journal.releases
        rows = [f"{'run':<48} {'compile':<15} {'img/s':>7} {'steps':>13}  {'result':<10} {'top-level kNN / linear'}"]
        for run in judge.runs:
            release = releases.get(run.entry.release, {}) if run.status == "finished" and run is not judge.eager \
                else {}
            figures = _figures(self.work / "eval" / run.entry.release / release.get("eval_json", "-"))
            result = "probe" if run is judge.eager else release.get("status", run.status)
            rows.append(f"{run.label.split('.')[0]:<48} {run.mode:<15} {run.speed(s.skip_windows) or 0:>7,.0f} "
                        f"{f'{run.step}/{run.steps}':>13}  {result:<10} {figures}")
        for name, r in releases.items():
            if r["status"] == "not started":
                rows.append(f"{Path(r['recipe']).stem:<48} {'-':<15} {'-':>7} {'-':>13}  {'not run':<10} {r['note']}")
        return "\n".join(rows)


def what_bounded(run: dict, busy: Optional[dict]) -> str:
    """What held a run's speed, from its data wait, its process's CPU share and the GPU's busy fraction while it
    trained alone: data loading, the GPU, or the host (the H100 run: one core at 100 %, the GPU 39 % busy)."""
    gpu = (busy or {}).get("1 run(s)", {}).get("busy")
    cpu, wait = run.get("cpu_cores_busy"), run.get("data_wait")
    seen = (f"GPU busy {'-' if gpu is None else f'{100 * gpu:.0f} %'}, CPU cores {cpu}, data wait "
            f"{'-' if wait is None else f'{wait:.3f}'}")
    if wait is not None and wait >= 0.2:
        return f"data loading ({seen})"
    if gpu is not None and gpu >= 0.9:
        return f"the GPU ({seen})"
    if cpu is not None and cpu >= 0.9:
        return f"the host: the training process's CPU time ({seen})"
    return f"not clear ({seen})"


def new_caches(folder: Path) -> List[Path]:
    """The compile caches the draw's runs saved (FOLDER/<stack>/<recipe>.<mode>.bin) that the repository lacks."""
    return [p for p in sorted(folder.glob("*/*.bin"))
            if not (REPO_CACHE / p.parent.name / p.name).is_file()]


def mirror(source: Path, target: Path) -> List[str]:
    """Make ``target`` ($OUT) hold the files of ``source`` (WORK/out), each copied under a dot name and then
    renamed, so that a command killed at any moment leaves whole files; returns the names copied."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in source.glob("*") if p.is_file() and not p.name.startswith(".")} \
        if source.is_dir() else {}
    for old in target.iterdir():
        if old.is_file() and old.name not in wanted:
            old.unlink()
    copied = []
    for name, path in sorted(wanted.items()):
        there = target / name
        stat = path.stat()
        if there.is_file() and there.stat().st_size == stat.st_size and there.stat().st_mtime_ns == stat.st_mtime_ns:
            continue
        partial = target / f".{name}.partial"
        shutil.copy2(path, partial)
        os.replace(partial, there)
        copied.append(name)
    return copied


def write_atomic(path: Path, data) -> None:
    """Write ``data`` (str or bytes) under a dot name beside ``path``, then rename it: readers see all or nothing."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(partial, path)


def sha256(path: Path) -> str:  # ladder_zoo.hub.sha256_file's: the draw's process imports no torch
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tar(members: List[tuple]) -> bytes:
    buffer, now = io.BytesIO(), int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for arcname, data in members:
            member = tarfile.TarInfo(f"draw/{arcname}")
            member.size, member.mode, member.mtime = len(data), 0o644, now
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _figures(path: Path) -> str:
    try:
        result = json.loads(path.read_text())
        level, knn = list(result["knn"]["accuracy"].items())[-1]
    except (OSError, ValueError, KeyError, IndexError):  # none yet, or not train.eval's
        return "-"
    linear = list(result.get("linear", {}).get("accuracy", {}).values())
    return f"{level} {100 * knn:.1f} / " + (f"{100 * linear[-1]:.1f}" if linear else "-")
