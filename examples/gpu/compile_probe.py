"""Which compile mode (train/step.py) a recipe's run should use on this GPU: every mode runs the same first steps,
in parallel processes, and each compiled mode's per-window losses are compared with eager's.

    python examples/gpu/compile_probe.py RECIPE [RECIPE ...] [--modes none default reduce-overhead] [--steps 60] [--set key=value ...]

Prints per recipe and mode the losses, the largest relative difference from eager and the img/s of the last
window (processes share the GPU: a rough figure, not a benchmark; train.bench is that), then per recipe the
first mode in ``--prefer`` order that ran and matched eager. Inductor's cache keeps the compiled graphs for the
real runs that follow.
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--modes", nargs="+", default=["none", "default", "reduce-overhead"])
    parser.add_argument("--prefer", nargs="+", default=["reduce-overhead", "default", "none"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest relative loss difference from eager")
    parser.add_argument("--out", default="/tmp/compile_probe")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="key=value for every run")
    args = parser.parse_args()
    jobs = {}
    for recipe in args.recipes:
        for mode in args.modes:
            out = Path(args.out) / f"{Path(recipe).stem}-{mode}"
            cmd = [sys.executable, "-m", "train.pretrain", "--config", recipe, f"compile={mode}", f"out_dir={out}",
                   f"max_steps={args.steps}", f"log_every={args.every}", "checkpoint_every=1000000", "resume=none",
                   "progress=false", *args.overrides]
            out.mkdir(parents=True, exist_ok=True)
            jobs[recipe, mode] = (out, subprocess.Popen(cmd, stdout=open(out / "stdout", "w"), stderr=subprocess.STDOUT))
    choice = {}
    for recipe in args.recipes:
        losses = {}
        for mode in args.modes:
            out, proc = jobs[recipe, mode]
            rc = proc.wait()
            records = [json.loads(line) for line in open(out / "log.jsonl")] if (out / "log.jsonl").is_file() else []
            losses[mode] = ([r["loss"] for r in records], records[-1]["img_per_s"] if records else 0.0, rc)
            if rc:
                print(f"{recipe} {mode}: exit {rc}; the end of its output:\n" + (out / "stdout").read_text()[-3000:])
        eager = losses.get("none", ([], 0, 1))[0]
        ok = []
        for mode, (curve, img_s, rc) in losses.items():
            diff = max((abs(a - b) / abs(b) for a, b in zip(curve, eager)), default=math.inf) if eager else math.nan
            good = rc == 0 and len(curve) == len(eager) > 0 and all(map(math.isfinite, curve)) and diff <= args.tolerance
            ok += [mode] if good else []
            print(f"{Path(recipe).stem} {mode:16s} rc {rc} img/s {img_s:8.0f} max rel diff {diff:.4f} "
                  f"{'ok' if good else 'REJECTED'} losses {[round(x, 4) for x in curve]}")
        choice[recipe] = next((m for m in args.prefer if m in ok), "none")
    Path(args.out, "choice.json").write_text(json.dumps(choice))
    print("choice:", json.dumps(choice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
