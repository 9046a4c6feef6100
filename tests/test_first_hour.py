"""A new user's mistakes end in one line naming the problem and the fix, from every entry point (issue: a timm
user's first hour). Each test is a row of what was tried; the Hub, card and detection rows live beside their
subjects (test_hub.py, test_integrations.py, test_cli.py)."""
import json
import shutil
import subprocess
import sys
import tomllib

import pytest
import torch

from helpers import ROOT, SAMPLE

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
CUDA_LINE = "this machine has no usable CUDA device"


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@NO_CUDA
def test_cuda_asked_for_where_there_is_none(capsys, tmp_path):
    from ladder_zoo.cli import main as zoo
    from train.bench import main as bench
    from train.eval.__main__ import main as evaluate
    from train.pretrain import main as pretrain

    assert pretrain([f"data.path={SAMPLE}", "device=cuda", f"out_dir={tmp_path}"]) == 2
    assert "device=cuda: " + CUDA_LINE in one_line(capsys.readouterr().err)
    assert zoo(["features", "byol_r18_cifar", str(SAMPLE), "--random-init", "--device", "cuda"]) == 2
    assert "--device=cuda: " + CUDA_LINE in one_line(capsys.readouterr().err)
    assert evaluate(["byol_r18_cifar.cifar10_200ep", "--data", str(SAMPLE), "--device", "cuda:1",
                     "--out", str(tmp_path)]) == 2
    assert "python -m train.eval: error: --device=cuda:1: " + CUDA_LINE in one_line(capsys.readouterr().err)
    assert bench(["--device", "cuda", "--out", str(tmp_path / "b.json")]) == 2
    assert "python -m train.bench: error: --device=cuda: " + CUDA_LINE in one_line(capsys.readouterr().err)


@NO_CUDA
def test_detectron2_on_its_default_cuda_device():
    pytest.importorskip("detectron2")
    from ladder_zoo.integrations.detectron2_train import argument_parser, setup

    args = argument_parser().parse_args(["--config-file", str(ROOT / "configs/detectron2/mask_rcnn_ladder_byol_r50_fpn_1x.yaml")])
    with pytest.raises(SystemExit, match=f"MODEL.DEVICE cuda: {CUDA_LINE}.*use MODEL.DEVICE cpu"):
        setup(args)


def test_data_path_without_its_split_folder(tmp_path, capsys):
    from train.pretrain import main

    flat = tmp_path / "flat"
    shutil.copytree(SAMPLE / "train", flat)  # class folders directly under data.path
    assert main([f"data.path={flat}", "device=cpu", f"out_dir={tmp_path / 'run'}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"data.path={flat} has no 'train' folder (data.split=train); it holds airplane, automobile" in line
    assert "data.split= (empty)" in line


def test_an_exported_folder_is_not_a_training_checkpoint(tmp_path):
    from ladder_zoo.errors import WeightsMismatchError
    from ladder_zoo.publish import write_hub_folder
    from helpers import random_state_dict
    from train import load_ssl_checkpoint

    folder = write_hub_folder(tmp_path / "byol_r18_cifar.mine", "byol_r18_cifar", "mine",
                              random_state_dict("byol_r18_cifar", 0))
    with pytest.raises(WeightsMismatchError, match=r"is an exported Hub folder \(config.json\), not a training "
                                                   r"checkpoint: load it with ladder_zoo.create_model\(NAME, "
                                                   "checkpoint_path="):
        load_ssl_checkpoint(folder)
    with pytest.raises(WeightsMismatchError, match="is not a training checkpoint of train/"):
        load_ssl_checkpoint(folder / "model.safetensors")


def test_pip_install_is_inference_only():
    """`pip install .` gives torch, torchvision, timm, huggingface_hub, safetensors (tqdm, which the Hub client
    needs anyway); training, detection and test dependencies are extras, and the package imports none of them
    (PyYAML comes with timm)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert names == {"torch", "torchvision", "timm", "huggingface_hub", "safetensors", "tqdm"}
    assert {"train", "mmdet", "test"} <= set(project["optional-dependencies"])
    code = ("import sys, ladder_zoo; m = ladder_zoo.create_model('byol_r18_cifar', features_only=True); "
            "print(json.dumps(sorted({'tensorboard', 'matplotlib', 'mmengine', 'pytest', 'train'} & "
            "{name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


@pytest.mark.parametrize("damage", ["truncated", "foreign", "plain pickle"])
def test_a_corrupt_or_foreign_pt_file_is_one_short_line(tmp_path, capsys, sample_images, damage):
    """torch's own error quotes "re-running with weights_only=False will likely succeed": wrong advice for a corrupt
    file, and unsafe for a foreign one. One line instead, naming what torch found."""
    import collections
    import pickle

    from ladder_zoo.cli import main

    path = tmp_path / "weights.pt"
    if damage == "truncated":
        torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, path)
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"conv1.weight": collections.UserDict()}, path)
    else:
        path.write_bytes(pickle.dumps({"conv1.weight": [0.0]}))
    assert main(["features", "byol_r18_cifar", str(sample_images[0]), "--checkpoint", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"ladder-zoo features: error: {path} is not a readable torch checkpoint (")
    assert "weights_only" not in line and len(line) < 320 + len(str(path)), line
    assert line.endswith("): truncated or corrupt (copy it again), or not a file of tensors (save a state_dict() with "
                         "torch.save, or as safetensors).")
    detail = {"truncated": "RuntimeError: PytorchStreamReader failed reading zip archive",
              "foreign": "(it holds more than tensors and plain containers: collections.UserDict)",
              "plain pickle": "(it holds more than tensors and plain containers: Unsupported operand"}[damage]
    assert detail in line
