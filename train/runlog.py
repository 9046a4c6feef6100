"""What a run reports: JSON lines (log.jsonl), TensorBoard scalars and, on rank 0, a progress bar with img/s
and ETA (on a terminal; where stderr goes to a file, one plain status line per window instead of a bar redrawn
with carriage returns). Metrics accumulate on the device and are read once per ``log_every`` steps (no per-step
host sync).

Each record holds, over its window of steps: the metrics averaged over steps and over ranks (one all_gather
per window), ``img_per_s`` (global images per second), ``data_wait`` (the fraction of the window the loop spent
waiting for the next batch, the largest over ranks: DDP waits for the slowest) and ``peak_mem_mib`` (peak
memory of each rank: CUDA allocated on GPUs, the process's peak resident set on CPUs).
"""
import json
import resource
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch

from .distributed import gather_rows


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, progress: bool, start: int, stop: int,
                 images_per_step: int):
        self.enabled, self.images_per_step, self.stop = enabled, images_per_step, stop
        self.started, self.start = time.perf_counter(), start
        self.lines = False  # status lines instead of a bar
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0
        self.waited = 0.0  # seconds spent in next(batches) in this window
        self.window_start, self.window_step = time.perf_counter(), start
        self.writer = self.bar = self.file = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / "log.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("tensorboard=true needs the tensorboard package: pip install 'ladder-zoo[train]', "
                                  "or set tensorboard=false") from e

            self.writer = SummaryWriter(str(run_dir / "tb"))
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.lines = progress and self.bar is None

    def accumulate(self, metrics: Dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def timed(self, batches: Iterator) -> Iterator:
        """``batches``, counting the time spent waiting for each one (the data-wait fraction)."""
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waited += time.perf_counter() - started
            yield batch

    def flush(self, step: int, extra: Dict[str, float]) -> Dict[str, float]:
        """Write the means over the window ending after ``step`` steps (and over ranks: every rank calls it);
        returns them."""
        elapsed = time.perf_counter() - self.window_start
        keys = sorted(self.sums)
        device = self.sums[keys[0]].device if keys else torch.device("cpu")
        own = torch.stack([self.sums[k].reshape(()) / max(self.count, 1) for k in keys]
                          + [torch.tensor(self.waited / max(elapsed, 1e-9), device=device),
                             torch.tensor(_peak_memory_mib(device), device=device)])
        rows = gather_rows(own)  # [ranks, metrics + 2]
        means = dict(zip(keys, rows[:, :len(keys)].mean(0).tolist())) if self.count else {}
        record = {"step": step, **extra, **means,
                  "img_per_s": (step - self.window_step) * self.images_per_step / max(elapsed, 1e-9),
                  "data_wait": float(rows[:, -2].max()), "peak_mem_mib": [round(m, 1) for m in rows[:, -1].tolist()]}
        self.sums, self.count, self.waited = {}, 0, 0.0
        self.window_start, self.window_step = time.perf_counter(), step
        if self.enabled:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if self.writer:
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)):
                        self.writer.add_scalar(k, v, step)
                self.writer.add_scalar("peak_mem_mib_max", max(record["peak_mem_mib"]), step)
            status = dict(loss=f"{record.get('loss', float('nan')):.4f}", img_s=f"{record['img_per_s']:.0f}",
                          data_wait=f"{record['data_wait']:.0%}", mem=f"{max(record['peak_mem_mib']):.0f}MiB")
            if self.bar:
                self.bar.set_postfix(**status, refresh=False)
            elif self.lines:
                left = (self.stop - step) * (time.perf_counter() - self.started) / max(step - self.start, 1)
                print(f"step {step}/{self.stop} " + " ".join(f"{k}={v}" for k, v in status.items())
                      + f" eta={int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}", file=sys.stderr)
        return record

    def step(self) -> None:
        if self.bar:
            self.bar.update(1)

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar else print)(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.writer:
            self.writer.close()
        if self.file:
            self.file.close()


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def last_record(run_dir: Path) -> Optional[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else None
