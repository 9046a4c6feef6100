"""Preemption: stop at a step boundary with a checkpoint when the cluster (or the person at the terminal) asks,
then exit with a code that tells the scheduler to requeue the job.

SIGTERM (what SLURM, Kubernetes and torchrun send before they kill), SIGUSR1 (SLURM's
``#SBATCH --signal=USR1@<seconds>``) and SIGINT (Ctrl-C; torchrun forwards it to its workers) only set a flag; a
second Ctrl-C raises ``KeyboardInterrupt`` at once (the checkpoints already written stay intact). At every step boundary the ranks agree on it with one
all_reduce(MAX) of a 1-element CPU tensor (on a gloo group, so an NCCL job does not sync its GPU stream for
it): a signal that reaches one rank, or reaches ranks at different steps, stops every rank after the same step.
Rank 0 writes the checkpoint of that step, all ranks meet at a barrier (so no rank exits while rank 0 is still
writing, which would make torchrun kill it), and ``train.pretrain.main`` returns ``PREEMPTED_EXIT_CODE``.
``resume=auto`` then continues exactly from that step.
"""
import os
import signal
import threading
from typing import Optional

import torch
import torch.distributed as dist

from . import distributed

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): checkpoint written, "try again later": requeue the job
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a preemption signal after writing the checkpoint of ``step``."""

    def __init__(self, step: int, signum: int, checkpoint):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        if signum == signal.SIGINT:
            super().__init__(f"stopped by Ctrl-C (SIGINT): checkpoint {checkpoint} holds step {step}; the same "
                             "command again continues from it (resume=auto)")
        else:
            super().__init__(f"preempted by {signal.Signals(signum).name}: checkpoint {checkpoint} holds step "
                             f"{step}; exit code {PREEMPTED_EXIT_CODE} asks the scheduler to requeue, resume=auto "
                             "continues")


class Watch:
    """``with Watch() as w:`` installs the handlers (main thread only) and restores the previous ones."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.received:  # a second Ctrl-C (or Ctrl-C after a preemption signal): stop now
                raise KeyboardInterrupt
            if os.environ.get("RANK", "0") == "0":  # os.write: a print could re-enter stderr's buffer mid-write
                os.write(2, b"\n" * os.isatty(2) + b"Ctrl-C: stopping after this step with a checkpoint; Ctrl-C again "
                            b"stops at once, without one\n")  # on a terminal, below the progress bar
        self.received = self.received or signum

    def __enter__(self) -> "Watch":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def agreed(self) -> int:
        """0 to go on; else the signal number that stops every rank after this step (max over ranks)."""
        local = self.received or 0
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return local
        flag = torch.tensor([local], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=distributed.host_group())
        return int(flag)

    def stop(self, step: int, signum: int, checkpoint) -> None:
        """After rank 0 saved ``step``: wait for it on every rank, then raise ``Preempted``."""
        if dist.is_initialized():
            dist.barrier(group=distributed.host_group())
        distributed.cleanup()
        raise Preempted(step, signum, checkpoint)
