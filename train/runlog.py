"""What a run reports: JSON lines (log.jsonl), TensorBoard scalars and, on rank 0, a progress bar with img/s
and ETA. Metrics accumulate on the device and are read once per ``log_every`` steps (no per-step host sync)."""
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, progress: bool, start: int, stop: int,
                 images_per_step: int):
        self.enabled, self.images_per_step = enabled, images_per_step
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0
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
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def accumulate(self, metrics: Dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def flush(self, step: int, extra: Dict[str, float]) -> Dict[str, float]:
        """Write the means over the window ending after ``step`` steps; returns them."""
        elapsed = time.perf_counter() - self.window_start
        means = {k: float(v) / self.count for k, v in self.sums.items()} if self.count else {}
        record = {"step": step, **extra, **means,
                  "img_per_s": (step - self.window_step) * self.images_per_step / max(elapsed, 1e-9)}
        self.sums, self.count = {}, 0
        self.window_start, self.window_step = time.perf_counter(), step
        if self.enabled:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if self.writer:
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)):
                        self.writer.add_scalar(k, v, step)
            if self.bar:
                self.bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}",
                                     img_s=f"{record['img_per_s']:.0f}", refresh=False)
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


def last_record(run_dir: Path) -> Optional[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else None
