"""Every code block of README.md, docs/*.md and the released model cards runs as written, or says here why it cannot
run on this machine (and which test runs its equivalent).

The Python blocks run in one fresh interpreter from the checkout's root, each in a namespace of its own, as a
newcomer's machine without network runs them: no HF_* / LADDER_ZOO_* setting, an empty Hugging Face cache and a Hub
endpoint that refuses connections (released weights come from the checkout's hub/ folder)."""
import json
import re
import subprocess
import sys
import textwrap
from typing import List, NamedTuple

import pytest

from helpers import ROOT, environ_without_hub

DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
        *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "hub").glob("*/*/README.md"))]
COMMANDS = ("python", "bash", "sh")  # other blocks (bibtex, a folder listing, YAML in a card) are not run

# (file, the block's first line): why it does not run here. Every other command block runs below.
NOT_HERE = {
    ("README.md", "# (a) set up on a fresh machine and run the main job: per-stage features of real CIFAR-10 images"):
        "a fresh venv installed from the package index (the newcomer trial in a fresh clone runs it; its features "
        "command: test_cli.py); (b) is this suite",
    ("README.md", "pip install .              # inference: torch, torchvision, timm, huggingface_hub, safetensors"):
        "installs from the package index",
    ("README.md", "ladder-zoo list [PATTERN] [--pretrained]          # names, tags, released figures"):
        "a synopsis (NAME, PATTERN, IMAGE stand for values); test_cli.py runs each command",
    ("README.md", "torchrun --nproc_per_node=8 -m train.pretrain --config train/configs/ladder_byol_r18_cifar_cifar10_200ep.yaml"):
        "8 GPUs and CIFAR-10; test_train_runs.py runs pretrain -> export -> create_model on the sample",
    ("README.md", "python -m train.eval runs/R/last.pt hub/ladder-zoo/NAME.TAG --data data/cifar10-jpeg.tar.gz --out runs/eval"):
        "a run's checkpoint and CIFAR-10; test_eval.py runs train.eval on the sample",
    ("docs/detection.md", "python -m ladder_zoo.integrations.detectron2_train --num-gpus 8 \\"):
        "8 GPUs and COCO; test_integrations.py trains the detectors a few steps",
    ("docs/detection.md", "python tools/train.py path/to/ladder-zoo/configs/mmdet/mask-rcnn_ladder-byol-r50_fpn_1x_coco.py \\"):
        "an mmdet checkout, COCO and GPUs; the Python block below builds the same model",
    ("docs/development.md", "ladder-zoo list --markdown              # README's model tables (between <!-- models:start/end -->)"):
        "test_docs.py compares what these print with the blocks they generate",
    ("docs/development.md", "python3 -m venv /tmp/oldstack && . /tmp/oldstack/bin/activate"):
        "a second venv of the GPU machine's timm and huggingface_hub, installed from the package index",
    ("docs/development.md", "rm -rf /tmp/cold && TORCHINDUCTOR_CACHE_DIR=/tmp/cold python -m pytest -q --durations=30"):
        "runs this suite",
    ("docs/performance.md", "python -m train.eval runs/R/last.pt hub/ladder-zoo/NAME.TAG --data data/cifar10-jpeg.tar.gz --out runs/eval"):
        "a run's checkpoint, CIFAR-10 and a GPU (benchmarks print figures; test_eval.py runs train.eval on the sample)",
    ("docs/performance.md", "python examples/gpu/draw.py --plan                                 # the budget above"):
        "test_draw.py runs these, on the CPU",
    ("docs/deployment.md", "ladder-zoo export-onnx byol_r18_cifar.cifar10_200ep --out runs/byol_r18_cifar.onnx --features-only"):
        "it writes runs/ into the checkout; test_onnx.py runs this export and checks the graph with onnxruntime",
    ("docs/deployment.md", "import numpy as np"):
        "reads the ONNX file of the block above; test_onnx.py runs the graph with onnxruntime alike",
    ("docs/segmentation.md", "pip install \"ladder-zoo[mmseg]\" ftfy   # mmseg 1.2.2 imports ftfy without requiring it (open-mmlab/mmsegmentation#3704)"):
        "installs from the package index",
    ("docs/segmentation.md", "MMSEG=$(python -c \"import mmseg, os; print(os.path.dirname(mmseg.__file__))\")/.mim"):
        "GPUs and PASCAL VOC; test_mmseg.py trains the VOC config one iteration on a tiny set",
    ("docs/segmentation.md", "python $MMSEG/tools/train.py configs/mmseg/fcn_ladder-byol-r50-d8_4xb4-20k_voc12aug-512x512.py \\"):
        "GPUs and PASCAL VOC; test_mmseg.py builds the config with another zoo name",
    ("docs/segmentation.md", "_base_ = \"mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py\""):
        "an mmseg config, not a script; test_mmseg.py builds it and loads the weights by the scheme",
    ("docs/reliability.md", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes=1:4 --nproc_per_node=8 --max-restarts=3 \\"):
        "a cluster of GPU nodes; test_reliability.py restarts a 2-process CPU group alike",
    ("docs/reliability.md", "python -m pytest -q tests/test_reliability.py     # 13 tests: 2.0-3.6 minutes on 2 CPU cores shared with other work"):
        "a suite module, and a measurement (1.28 M file names) rather than a check",
    ("docs/training.md", "mkdir -p data && cp path/to/cifar10-jpeg.tar.gz data/   # CIFAR-10 as JPEGs in ImageFolder layout; recipes read the archive as is"):
        "CIFAR-10 and 8 GPUs; test_train_runs.py runs pretrain -> export -> create_model on the sample",
    ("docs/training.md", "import ladder_zoo"):
        "the CPU demo's checkpoint (CIFAR-10); test_models.py loads a training checkpoint alike",
    ("docs/weights.md", "import ladder_zoo"):
        "downloads the authors' files from GitHub; test_external.py serves files of their exact layout from "
        "127.0.0.1 through the same download code",
    ("docs/weights.md", "ladder-zoo import byol.ckpt --model byol_r18 --out hub/ladder-zoo/byol_r18.my_lightly_run [--weights target] [--license MIT]"):
        "a synopsis (byol.ckpt stands for a trainer's checkpoint); test_import.py imports checkpoints made by "
        "lightly, mmpretrain and the other layouts' fixtures",
    ("docs/weights.md", "import timm   # no ladder_zoo needed"):
        "ladder_byol_r50.in1k_200ep is not released and the Hub is out of reach; test_hub.py loads an export with "
        "plain timm from a local folder and from a local Hub",
}
OPTIONAL = ("detectron2", "mmdet", "mmcv", "mmengine", "mmseg", "transformers", "onnxruntime")  # a block importing one of them skips where it is missing


class Block(NamedTuple):
    path: str
    line: int
    lang: str
    code: str

    @property
    def first(self) -> str:
        return self.code.splitlines()[0]

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def blocks(path: str) -> List[Block]:
    """The fenced code blocks of a Markdown file (indented ones in lists included), dedented."""
    text = (ROOT / path).read_text()
    found = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S):
        found.append(Block(path, text[:m.start()].count("\n") + 2, m.group(2), textwrap.dedent(m.group(3))))
    return found


ALL = [b for path in DOCS for b in blocks(path)]
RUN = [b for b in ALL if b.lang == "python" and (b.path, b.first) not in NOT_HERE]

RUNNER = r"""
import json, sys, time, traceback
results = {}
for block in json.load(sys.stdin):
    start = time.monotonic()
    try:
        exec(compile(block["code"], block["id"], "exec"), {"__name__": "__main__"})
        result = {"status": "ok"}
    except ModuleNotFoundError as e:
        result = {"status": "missing", "module": e.name, "error": str(e)}
    except BaseException as e:
        result = {"status": "error", "error": "".join(traceback.format_exception_only(type(e), e)).strip()}
    results[block["id"]] = {**result, "seconds": round(time.monotonic() - start, 1)}
print(json.dumps(results))
"""


def test_every_command_block_runs_or_says_why_not():
    commands = {(b.path, b.first) for b in ALL if b.lang in COMMANDS}
    unexplained = [b.id for b in ALL if b.lang in ("bash", "sh") and (b.path, b.first) not in NOT_HERE]
    assert not unexplained, f"shell blocks that neither run here nor say why: {unexplained}"
    stale = [key for key in NOT_HERE if key not in commands]
    assert not stale, f"NOT_HERE names blocks that no longer exist: {stale}"
    assert len(RUN) >= 6


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The runnable Python blocks, run once in one fresh interpreter: {block id: result}."""
    cache = tmp_path_factory.mktemp("hf-cache")
    env = {**environ_without_hub(), "PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1"}
    payload = json.dumps([{"id": b.id, "code": b.code} for b in RUN])
    done = subprocess.run([sys.executable, "-c", RUNNER], input=payload, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_python_block_runs_as_written(ran, block):
    result = ran[block.id]
    if result["status"] == "missing" and result["module"].split(".")[0] in OPTIONAL:
        pytest.skip(f"{block.id} needs {result['module']}, not installed here")
    assert result["status"] == "ok", f"{block.id} ({block.first!r}): {result['error']}"


def test_every_config_key_is_described():
    from train.config import reference_markdown

    rows = [line.split(" | ") for line in reference_markdown().splitlines()[2:]]
    assert [row[0] for row in rows if not row[2].strip(" |")] == []
