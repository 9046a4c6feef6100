"""The figures of README's reliability table, measured outside pytest: the runs of tests/test_reliability.py,
plus SIGTERM to torchrun itself, as a Kubernetes eviction sends it. Prints one line per fault:

    PYTHONPATH=. python tests/measure_faults.py /tmp/faults
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from helpers import FAST_STEPS  # noqa: E402
from test_reliability import finish, launch, records, standalone, state, wait_for, workers  # noqa: E402

PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


def signalled(run_dir, name, send, launcher=()):
    """Start a run without periodic checkpoints, in a session of its own (as a terminal's foreground job: Ctrl-C
    reaches its process group), ``send(proc, ranks)`` once step 3 is logged; report."""
    proc = launch(run_dir, "checkpoint_every=100", launcher=launcher, start_new_session=True, **PIPES)
    ranks = workers(proc.pid, 2) if launcher else {}
    wait_for(lambda: len(records(run_dir)) >= 3, proc, "step 3")
    send(proc, ranks)
    sent = time.time()
    code, output = finish(proc)
    reached, saved = records(run_dir)[-1]["step"], state(run_dir)["step"] if (run_dir / "last.pt").exists() else 0
    stopped = len(re.findall(r"(preempted by SIG\w+|stopped by Ctrl-C \(SIGINT\)): checkpoint", output))
    print(f"{name}: exit {code} {time.time() - sent:.1f} s after the signal; reached step {reached}, checkpoint holds "
          f"step {saved}: {reached - saved} steps lost; {stopped} rank(s) reported the preemption", flush=True)


def main(out: Path) -> None:
    signalled(out / "sigterm", "SIGTERM to the process", lambda p, r: p.send_signal(signal.SIGTERM))
    signalled(out / "torchrun", "SIGTERM to torchrun (2 workers)", lambda p, r: p.send_signal(signal.SIGTERM),
              standalone(2))
    signalled(out / "usr1", "SIGUSR1 to rank 1 only", lambda p, r: os.kill(r[1], signal.SIGUSR1), standalone(2))
    ctrl_c = lambda p, r: os.killpg(p.pid, signal.SIGINT)  # noqa: E731  (what a terminal sends its foreground job)
    signalled(out / "ctrl_c", "Ctrl-C to the process", ctrl_c)
    signalled(out / "ctrl_c_torchrun", "Ctrl-C to torchrun (2 workers)", ctrl_c, standalone(2))

    run_dir = out / "kill9"
    proc = launch(run_dir, "checkpoint_every=2", launcher=standalone(2, "--max-restarts=1"), **PIPES)
    ranks = workers(proc.pid, 2)
    wait_for(lambda: (run_dir / "last.pt").exists() and len(records(run_dir)) >= 3, proc, "step 3")
    os.kill(ranks[1], signal.SIGKILL)
    reached, killed = records(run_dir)[-1]["step"], time.time()
    code, output = finish(proc)
    resumed = [int(s) for s in re.findall(rf"steps (\d+)\.\.{FAST_STEPS} of", output)][-1]
    print(f"kill -9 of rank 1 under torchrun --max-restarts=1: exit {code} {time.time() - killed:.1f} s after the kill;"
          f" reached step {reached}, restarted from {resumed}: {reached - resumed} steps lost; final step "
          f"{state(run_dir)['step']}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
