"""Throughput benchmark, side by side in one run, printed as a table and written as JSON.

    python -m train.bench [--out runs/bench.json] [--batch 256] [--size 224] [--steps 30] [--warmup 10]
    python -m train.bench --device cpu --batch 4 --size 64 --steps 1 --warmup 1 --parts a b d   (CPU smoke test)
    python -m train.bench --parts c --compile none default reduce-overhead --profile     (modes side by side)

(a) the eager ceiling: a supervised timm resnet50 train step (bf16, channels_last, plain eager PyTorch); a
    BYOL step does two forward+backward passes and two target forwards per image, 8/3 of a supervised step,
    so the eager BYOL ceiling is (a) x 3/8;
(b) our pretraining step (``train.step.Step``, the training loop's) for BYOL, Ladder-BYOL, DenseBYOL, Ladder-DenseBYOL and
    multi-task BYOL on ResNet-50 with their ImageNet recipes: model only (views already on the device) and with
    the full data pipeline from JPEG files (GPU decode + GPU augmentation); peak memory of each;
(c) CIFAR-stem ResNet-18 on CIFAR-10 (in-memory GPU pipeline): BYOL and Ladder-BYOL epoch time;
(d) ladder_zoo ``features_only`` inference against timm's resnet50 ``features_only`` with the same weights.

``--compile`` times (b) and (c) in each listed mode (``train/step.py``). ``--profile`` then records a few more
steps of each (b) / (c) row with torch.profiler and prints its top kernels by GPU time (on a CPU: top ops by CPU
time) and the GPU-idle fraction of a step: the share of the profiled wall time in which no kernel ran (on a
CPU: in which no top-level op ran, i.e. Python and framework overhead).

Images per second count images, not views. ``--jpeg-data`` defaults to JPEGs made once from CIFAR-10 images
upscaled to ImageNet-like sizes (no ImageNet on this project's machines): decode cost per pixel is realistic,
content is not.
"""
import argparse
import itertools
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn.functional as F

import ladder_zoo
from ladder_zoo.device import resolve_device
from ladder_zoo.models import METHODS, MODELS

from .compile_modes import COMPILE_MODES
from .config import load_config, recipe_file
from .data import build_pipeline
from .model import build_model
from .optim import build_optimizer
from .step import Step

R50_METHODS = [m for m in METHODS if f"{m}_r50" in MODELS]  # (b)'s choices: the methods with a ResNet-50 recipe
DEFAULT_METHODS = ["byol", "ladder_byol", "densebyol", "ladder_densebyol", "byol_mt"]  # one per kind of BYOL loss


def timed(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> Dict[str, float]:
    """Seconds per step (after ``warmup`` steps) and peak device memory (GB) of ``step``."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    return {"s_per_step": seconds, "peak_gb": peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profiled(step: Callable[[], None], steps: int, device: torch.device, top: int = 15) -> Dict:
    """torch.profiler over ``steps`` steps: the top kernels by device time (CPU ops by CPU time on a CPU), per
    step, and the idle fraction of the device (the share of wall time covered by no kernel / top-level op); on
    a GPU also the host's top ops by self CPU time and its kernel / graph launches per step (a host-bound step)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    events = prof.events()
    if cuda:
        busy = [e for e in events if e.device_type == DeviceType.CUDA]
    else:
        busy = [e for e in events if e.device_type == DeviceType.CPU and e.cpu_parent is None]
    spans = sorted((e.time_range.start, e.time_range.end) for e in busy)
    covered, end = 0.0, float("-inf")
    for a, b in spans:  # length of the union of the intervals
        if b > end:
            covered += b - max(a, end)
            end = b
    wall = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    averages = prof.key_averages()

    def ranked(key: str) -> List[Dict]:
        rows = sorted((r for r in averages if getattr(r, key) > 0), key=lambda r: -getattr(r, key))
        total = sum(getattr(r, key) for r in rows)
        return [{"name": r.key, "ms_per_step": getattr(r, key) / 1000 / steps, "calls_per_step": r.count / steps,
                 "share": getattr(r, key) / max(total, 1e-9)} for r in rows[:top]]

    result = {
        "idle_fraction": 1 - covered / max(wall, 1e-9), "busy_ms_per_step": covered / 1000 / steps,
        "wall_ms_per_step": wall / 1000 / steps, "by": "gpu" if cuda else "cpu",
        "top": ranked("self_device_time_total" if cuda else "self_cpu_time_total"),
    }
    if cuda:  # where the host's time goes when the GPU idles: its ops, and the launches it makes per step
        result["host_top"] = ranked("self_cpu_time_total")
        result["launches_per_step"] = sum(e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                     "cudaGraphLaunch") for e in events) / steps
    return result


def print_profile(name: str, p: Dict) -> None:
    def table(rows: List[Dict]) -> None:
        for r in rows:
            print(f"  {r['name'][:70]:<70} {r['ms_per_step']:8.2f} {r['calls_per_step']:6.0f} {100 * r['share']:5.1f}%")

    print(f"\nprofile of {name}: {p['wall_ms_per_step']:.1f} ms per step, {p['by'].upper()} busy "
          f"{p['busy_ms_per_step']:.1f} ms, idle {100 * p['idle_fraction']:.1f} %")
    print(f"  {'top ' + ('kernels by GPU' if p['by'] == 'gpu' else 'ops by self CPU') + ' time':<70} {'ms/step':>8} "
          f"{'calls':>6} {'share':>6}")
    table(p["top"])
    if "host_top" in p:
        print(f"  {'top host ops by self CPU time (' + format(p['launches_per_step'], '.0f') + ' launches per step)':<70}")
        table(p["host_top"])


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def supervised(args, device) -> Dict[str, float]:
    model = timm.create_model("resnet50", num_classes=1000).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    def step():
        with _autocast(device, args.amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {**timed(step, args.steps, args.warmup, device), "images": args.batch}


def pretraining(recipe: str, args, device, overrides: List[str], with_data: bool, mode: str = "none") -> Dict:
    """The training loop's ``Step`` of a recipe in a compile mode: on fixed views already on the device, or on the
    recipe's data pipeline."""
    cfg = load_config(str(recipe_file(recipe)),
                      [f"device={device.type}", "channels_last=true", *overrides, f"compile={mode}"])
    model = build_model(cfg).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim, model.predictor_parameters())
    model.train()
    epoch_steps = None
    if with_data:
        data = build_pipeline(cfg, 0, 1, device)
        epoch_steps = data.steps_per_epoch
        total = args.warmup + args.steps + (args.profile_steps if args.profile else 0)
        batches, views = data.batches(0, total), data.views
    else:
        from .data.views import view_specs

        fixed: Dict[str, list] = {}
        for spec in view_specs(cfg.data, cfg.method.views):
            x = torch.randn(cfg.batch_size, 3, spec.size, spec.size, device=device)
            fixed.setdefault(spec.kind, []).append(x.contiguous(memory_format=torch.channels_last))
        batches, views = itertools.repeat(None), lambda batch, index: fixed

    train_step = Step(cfg, model, model, optimizer, views, device)
    train_step.set_rates(cfg.optim.lr * 0.01, cfg.optim.lr)
    index = itertools.count()

    def step():
        train_step(next(batches), next(index), 0.996)

    r = {**timed(step, args.steps, args.warmup, device), "images": cfg.batch_size}
    if epoch_steps:
        r["epoch_s"] = r["s_per_step"] * epoch_steps
    if args.profile:
        r["profile"] = profiled(step, args.profile_steps, device)
    return r


def features(args, device) -> Dict[str, Dict[str, float]]:
    """Inference img/s of ladder_zoo's and timm's resnet50 features_only with the same weights."""
    ours = ladder_zoo.create_model("byol_r50", features_only=True)
    theirs = timm.create_model("resnet50", features_only=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, model in (("timm resnet50", theirs), ("ladder_zoo byol_r50", ours)):
        model = model.eval().to(device, memory_format=torch.channels_last)

        def step(model=model):
            with torch.inference_mode(), _autocast(device, args.amp):
                model(x)

        out[name] = {**timed(step, args.steps, args.warmup, device), "images": args.batch}
    return out


def synthetic_jpegs(source: str, out: Path, n: int, seed: int = 0) -> Path:
    """n JPEGs in ImageFolder layout, CIFAR-10 images upscaled to random ImageNet-like sizes (quality 90)."""
    from torchvision.io import encode_jpeg

    from .data import ImageFolder
    from .data.imagefolder import decode_rgb

    marker = out / f".complete-{n}"
    if marker.exists():
        return out
    images = ImageFolder(source, "train")
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        i = int(torch.randint(len(images), (1,), generator=g))
        h, w = (int(v) for v in torch.randint(300, 500, (2,), generator=g))
        image = F.interpolate(decode_rgb(images.read(i))[None].float(), size=(h, w), mode="bilinear",
                              align_corners=False)[0].clamp(0, 255).to(torch.uint8)
        path = out / "train" / f"c{int(images.labels[i])}" / f"{k:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
    marker.touch()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=R50_METHODS,
                        help="methods of (b), each with its ResNet-50 ImageNet recipe")
    parser.add_argument("--cifar", default="data/cifar10-jpeg.tar.gz", help="CIFAR-10 archive for (c) and JPEGs")
    parser.add_argument("--cifar-steps", type=int, default=0, help="steps timed in (c) (0: one full epoch)")
    parser.add_argument("--cifar-batch", type=int, default=256, help="batch of (c), the CIFAR recipes' by default")
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d"])
    parser.add_argument("--jpeg-data", help="ImageFolder of JPEGs for (b) with data (default: synthetic)")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--compile", nargs="+", default=["none"], choices=list(COMPILE_MODES),
                        help="compile modes of (b) and (c), each timed (train/step.py)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler: top kernels and GPU-idle fraction")
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--out", default="runs/bench.json")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:  # one line, as every input error of the command
        print(f"python -m train.bench: error: {e}", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    amp = "amp=bf16" if args.amp else "amp=none"
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "timm": timm.__version__, "batch": args.batch, "size": args.size,
              "bf16": args.amp, "command": "python -m train.bench " + " ".join(sys.argv[1:] if argv is None else argv)}
    rows = []

    def record(name, r, key):
        r["img_per_s"] = r["images"] / r["s_per_step"]
        result.setdefault(key, {})[name] = r
        rows.append((name, r))

    record("(a) timm resnet50 supervised step", supervised(args, device), "supervised")  # every table needs (a)
    ceiling = result["supervised"]["(a) timm resnet50 supervised step"]["img_per_s"] * 3 / 8
    result["byol_eager_ceiling_img_per_s"] = ceiling
    common = [f"batch_size={args.batch}", f"data.image_size={args.size}", amp, f"data.workers={args.workers}",
              "progress=false"]
    if "b" in args.parts:
        jpegs = args.jpeg_data
        if jpegs is None and Path(args.cifar).exists():
            jpegs = str(synthetic_jpegs(args.cifar, Path("data/bench_jpegs"), max(2048, 4 * args.batch)))
        for method, mode in ((m, c) for m in args.methods for c in args.compile):
            recipe, tag = f"{method}_r50_in1k_200ep", "" if mode == "none" else f" [{mode}]"
            record(f"(b) {method} R50, model only{tag}", pretraining(recipe, args, device, common, False, mode),
                   "pretrain_model_only")
            if jpegs:
                record(f"(b) {method} R50, JPEG pipeline{tag}",
                       pretraining(recipe, args, device, [*common, f"data.path={jpegs}", "data.split=train"], True,
                                   mode), "pretrain_with_data")
    if "c" in args.parts and Path(args.cifar).exists():
        for method, mode in ((m, c) for m in ("byol", "ladder_byol") for c in args.compile):
            cifar_args = argparse.Namespace(**{**vars(args), "steps": args.cifar_steps or 50000 // args.cifar_batch,
                                               "warmup": min(5, args.warmup)})
            overrides = [amp, f"data.path={args.cifar}", f"data.workers={args.workers}", f"batch_size={args.cifar_batch}"]
            tag = "" if mode == "none" else f" [{mode}]"
            record(f"(c) {method} CIFAR R18, in-memory GPU pipeline{tag}",
                   pretraining(f"{method}_r18_cifar_cifar10_200ep", cifar_args, device, overrides, True, mode), "cifar")
    if "d" in args.parts:
        for name, r in features(args, device).items():
            record(f"(d) {name} features_only inference", r, "features")

    width = max(len(n) for n, _ in rows)
    print(f"{result['device']}, batch {args.batch}, {args.size} px, {'bf16' if args.amp else 'fp32'}")
    print(f"{'':{width}}  {'img/s':>9}  {'ms/step':>8}  {'peak GB':>7}  {'/ BYOL ceiling':>14}")
    for name, r in rows:
        ratio = f"{r['img_per_s'] / ceiling:.2f}" if name.startswith("(b)") else ""
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        extra = f"  epoch {r['epoch_s']:.1f} s" if "epoch_s" in r else ""
        print(f"{name:{width}}  {r['img_per_s']:9.0f}  {1000 * r['s_per_step']:8.1f}  {peak:>7}  {ratio:>14}{extra}")
    print(f"eager BYOL ceiling (a) x 3/8: {ceiling:.0f} img/s")
    for name, r in rows:
        if "profile" in r:
            print_profile(name, r["profile"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
