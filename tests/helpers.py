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
