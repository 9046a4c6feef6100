"""Helpers shared by the tests: weight folders in Hub layout, reference features, fresh-interpreter runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "cifar10_sample"
TINY_MODEL = "ladder_byol_r18_cifar"
# train.pretrain's overrides for the tests' tiny run: the 40 train images of the sample, batch 8 (5 steps per epoch,
# 10 in all), 16 px views (the sample is 32 px: a quarter of the work), float32 on the CPU, a log record every step
TINY_RUN = [
    f"model={TINY_MODEL}", "method.levels=G G G G", "method.proj_hidden=64", "method.proj_out=32",
    "method.pred_hidden=64", f"data.path={SAMPLE}", "data.split=train", "data.image_size=16", "data.in_memory=true",
    "data.workers=0", "data.mean=[0.4914, 0.4822, 0.4465]", "data.std=[0.247, 0.2435, 0.2616]",
    "data.augment.blur_p=[0.0, 0.0]", "batch_size=8", "epochs=2", "optim.lr=1.0", "optim.eta=0.02",
    "optim.clip_lars_lr=true", "optim.warmup_epochs=1", "optim.weight_decay=1e-5", "method.tau=0.99", "amp=none",
    "channels_last=false", "device=cpu", "progress=false", "tensorboard=false", "log_every=1",
]
TINY_EPOCH_STEPS = 5  # the sample's 40 train images in TINY_RUN's batches of 8
TINY_STEPS = 2 * TINY_EPOCH_STEPS  # TINY_RUN's 2 epochs
# the tiny run on timm's resnet10t (a fraction of the CIFAR ResNet's work, 60 MB checkpoints), 6 of its 10 steps
FAST_STEPS = 6
FAST_RUN = [*TINY_RUN, "model=resnet10t", f"max_steps={FAST_STEPS}"]


def flatten(tree, prefix: str = "") -> Dict[str, torch.Tensor]:
    """A checkpoint's nested dicts and lists (model, optimizer state) as {dotted key: tensor}, numbers as tensors."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(tree, torch.Tensor):
        out[prefix[:-1]] = tree
    else:
        out[prefix[:-1]] = torch.tensor(tree) if isinstance(tree, (int, float, bool)) else torch.tensor(0)
    return out


def tiny_backbone(seed: int = 0) -> torch.nn.Module:
    """A seeded 4-stage ResNet (one BasicBlock per stage, 8..64 channels): Ladder models small enough for CPU steps."""
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    return ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), num_classes=0)


def small_heads(**kw):
    """A ``MethodConfig`` with small projector, predictor and dense heads; ``kw`` sets the rest."""
    from train.config import MethodConfig

    return MethodConfig(**{"proj_hidden": 32, "proj_out": 16, "pred_hidden": 32, "dense_hidden": 16, "dense_out": 8, **kw})


def random_state_dict(name: str, seed: int) -> Dict[str, torch.Tensor]:
    """A backbone state dict of ``name`` with non-trivial BN statistics (fp16-representable, as released)."""
    import ladder_zoo

    torch.manual_seed(seed)
    model = ladder_zoo.create_model(name)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            v = (torch.rand_like(v) + 0.5 if k.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight"))
                 else torch.randn_like(v) * 0.05).half().float()
        state[k] = v
    return state


def make_release(root: Path, arch: str, tag: str, seed: int = 0, **kwargs):
    """Write ``root/<repo_id>/`` in Hub layout; returns (repo_id, folder, release entry, state dict)."""
    from ladder_zoo import hub
    from ladder_zoo.publish import record_release, write_hub_folder

    repo = hub.repo_id(arch, tag)
    state = random_state_dict(arch, seed)
    folder = write_hub_folder(root / repo, arch, tag, state, **kwargs)
    return repo, folder, record_release(folder), state


def reference_features(arch: str, state: Dict[str, torch.Tensor], x: torch.Tensor):
    import ladder_zoo

    model = ladder_zoo.create_model(arch, features_only=True).eval()
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        return model(x)


def run_main(main, argv, capsys) -> subprocess.CompletedProcess:
    """A command's ``main(argv)`` in this process, as ``subprocess.run`` would report it (exit code, stdout,
    stderr), for tests where the process boundary is no part of what they check."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's parser.error
        code = e.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


HUB_VARIABLES = ("HF_", "LADDER_ZOO_")  # the prefixes of what decides where weights come from


def environ_without_hub() -> Dict[str, str]:
    """This process's environment less every HF_* / LADDER_ZOO_* variable: a subprocess that reads no Hub setting
    of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith(HUB_VARIABLES)}


def hub_variables(tmp_path: Path, env: Optional[Dict[str, str]] = None,
                  releases: Optional[dict] = None) -> Dict[str, str]:
    """The HF_* / LADDER_ZOO_* variables of a test's own Hub setting: a private HF cache, only ``releases`` on record
    and no local Hub root, then ``env`` (which may name one): the test controls every copy of the weights."""
    record = tmp_path / "test-releases.json"
    record.write_text(json.dumps(releases or {}))
    return {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "LADDER_ZOO_RELEASES": str(record), "LADDER_ZOO_HUB_DIR": "", **(env or {})}


def run_python(code: str, tmp_path: Path, env: Optional[Dict[str, str]] = None, releases: Optional[dict] = None):
    """Run ``code`` in a fresh interpreter whose Hub setting is ``hub_variables``' and nothing else."""
    base = {**environ_without_hub(), "PYTHONPATH": str(ROOT), **hub_variables(tmp_path, env, releases)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=base, capture_output=True, text=True, timeout=300,
    )
