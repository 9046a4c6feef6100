"""A new user's mistakes end in one line naming the problem and the fix, from every entry point (issue: a timm
user's first hour). Each test is a row of what was tried; the Hub, card and detection rows live beside their
subjects (test_hub.py, test_integrations.py, test_cli.py)."""
import json
import re
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
    assert line.startswith(f"ladder-zoo features: error: {path}")
    assert "weights_only=False" not in line and len(line) < 320 + len(str(path)), line
    unreadable = ("is not a readable torch checkpoint ({}): truncated or corrupt (copy it again), or not a file of "
                  "tensors (save a state_dict() with torch.save, or as safetensors).")
    detail = {"truncated": unreadable.format("RuntimeError: PytorchStreamReader failed reading zip archive: failed "
                                             "finding central directory"),
              # a UserDict unpickles as an inert placeholder (weights.METADATA_MODULES), then fits no layout
              "foreign": ": unknown layout: a dict of 1 entries (conv1.weight) without one state dict of tensors",
              "plain pickle": unreadable.format("Unsupported operand 149")}[damage]
    assert detail in line, line


@pytest.fixture(params=["refused", "silent"])
def dead_hub(request):
    """An HF_ENDPOINT that refuses connections (port 9), or one that accepts them and never answers (a black hole:
    every request waits for its timeout)."""
    import socket

    if request.param == "refused":
        yield "http://127.0.0.1:9"
        return
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_without_the_hub_each_entry_point_answers_within_seconds(hub_env, dead_hub, tmp_path, sample_images, capsys):
    """huggingface_hub alone retries for 20-50 s, then raises its generic error: these say what to do at once (one
    request to the endpoint, 3 s timeout)."""
    import time

    import ladder_zoo
    from helpers import make_release
    from ladder_zoo.cli import main

    def quick(call):
        start = time.monotonic()
        with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
            call()
        assert time.monotonic() - start < 5, f"{time.monotonic() - start:.1f} s"
        return str(e.value)

    hub_env({"HF_ENDPOINT": dead_hub})  # timm's own weights of a timm name, through the CLI
    start = time.monotonic()
    assert main(["features", "resnet18", str(sample_images[0].parent)]) == 2
    assert time.monotonic() - start < 5, f"{time.monotonic() - start:.1f} s"
    assert one_line(capsys.readouterr().err) == (
        f"ladder-zoo features: error: timm's weights of resnet18 (timm/resnet18.a1_in1k) are not in the Hugging Face "
        f"cache and the Hub at {dead_hub} does not answer. Download them once online (`hf download "
        "timm/resnet18.a1_in1k`), or use --random-init (shapes only).")
    if not dead_hub.endswith(":9"):  # one route through the black hole is enough: each asks the endpoint alike
        return
    repo, _, entry, _ = make_release(tmp_path / "hub", "byol_r18_cifar", "cifar10_200ep")
    hub_env({"HF_ENDPOINT": dead_hub, "LADDER_ZOO_HUB_DIR": str(tmp_path / "hub")}, {repo: entry})
    message = quick(lambda: ladder_zoo.create_model("byol_r18_cifar.cifar10_200ep", pretrained=True, revision="v1"))
    assert message.endswith(f"at revision 'v1' is neither reachable on the Hub nor cached ({dead_hub} does not "
                            "answer). A pinned revision is only served by the Hub or its cache: go online once, or "
                            "drop revision= to use a local copy.")
    hub_env({"HF_ENDPOINT": dead_hub}, {repo: entry})  # README's quick start after a non-editable `pip install .`
    message = quick(lambda: ladder_zoo.create_model("byol_r18_cifar.cifar10_200ep", pretrained=True))
    assert f"(ConnectionError: {dead_hub} does not answer)" in message
    assert f"put a copy in LADDER_ZOO_HUB_DIR/{repo}/ (a source checkout holds the released ones in its hub/ folder)" \
        in message


def test_a_redirected_log_reads_line_by_line_and_a_second_run_says_nothing_is_left(tmp_path, capsys):
    """stderr to a file (here, pytest's capture): status lines, no progress bar redrawn with carriage returns for
    the messages to stick to. Then docs/training.md's CPU demo run twice: the second finds the finished run
    (resume=auto) and says what to do."""
    from helpers import FAST_RUN
    from train.pretrain import main

    command = [*FAST_RUN, "max_steps=2", "progress=true", f"out_dir={tmp_path}"]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("run: resnet10t, levels 'G G G G', 1 process(es) on cpu, steps 0..2 of 10"), err
    assert [line.split()[:2] for line in lines[-2:]] == [["step", "1/2"], ["step", "2/2"]], err
    assert re.fullmatch(r"step 2/2 loss=-?\d+\.\d{4} img_s=\d+ data_wait=\d+% mem=\d+MiB eta=0:00:00", lines[-1])
    assert main(command) == 0
    assert (f"nothing to train: {tmp_path / 'last.pt'} already holds step 2, the last of this run (max_steps=2, "
            "epochs=2). Raise max_steps or epochs to go on, or start over in a fresh out_dir= (or with resume=none)."
            ) in capsys.readouterr().err


@pytest.mark.parametrize("key, meant", [("optim.learning_rate", "optim.lr"), ("optim.wd", "optim.weight_decay"),
                                        ("optim.lr_min", "optim.min_lr"), ("optim.base_lr", "optim.lr"),
                                        ("data.num_workers", "data.workers"), ("optim.weight_decy", "optim.weight_decay")])
def test_a_config_key_in_other_words_gets_the_one_meant(key, meant):
    from train.config import load_config

    with pytest.raises(ValueError, match=rf"unknown config key '{key}'; did you mean [^?]*\b{meant}\b"):
        load_config(None, [f"{key}=1"])


def test_weights_not_found_names_the_fix_where_the_user_is(isolated_hub, tmp_path, capsys):
    """The shipped detection configs name ladder_byol_r50.in1k_200ep, unreleased: the error's fix is a config key in
    a config, a flag on a command line; create_model's pretrained=False only in Python."""
    import ladder_zoo
    from ladder_zoo.cli import main

    name = "ladder_byol_r50.in1k_200ep"
    assert main(["convert", name, "--to", "mmdet", str(tmp_path / "r50.pth")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"No weights are published for {name}" in line and "or use --checkpoint PATH (a run's own weights)" in line
    fixes = {"ladder-zoo convert": line}
    try:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_backbone

        from ladder_zoo.integrations.detectron2 import add_ladder_zoo_config
    except ImportError:
        pass
    else:
        cfg = get_cfg()
        add_ladder_zoo_config(cfg)
        cfg.merge_from_file(str(ROOT / "configs/detectron2/mask_rcnn_ladder_byol_r50_fpn_1x.yaml"))
        with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
            build_backbone(cfg)
        assert "or use MODEL.LADDER_ZOO.PRETRAINED False." in str(e.value)
        fixes["detectron2"] = str(e.value)
    try:
        from mmengine.config import Config
        from mmengine.registry import MODELS
        from mmengine.runner import CheckpointLoader
    except ImportError:
        pass
    else:
        cfg = Config.fromfile(str(ROOT / "configs/mmdet/mask-rcnn_ladder-byol-r50_fpn_1x_coco.py"))
        with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
            MODELS.build(cfg.model.backbone)
        assert ("or use backbone.pretrained=False (in the config, or --cfg-options model.backbone.pretrained=False)"
                in str(e.value))
        fixes["mmdet"] = str(e.value)
        with pytest.raises(ladder_zoo.WeightsNotFoundError) as e:
            CheckpointLoader.load_checkpoint(f"ladder-zoo://{name}")
        assert "or use no init_cfg (random weights)." in str(e.value)
        fixes["ladder-zoo://"] = str(e.value)
    assert not [where for where, message in fixes.items() if "pretrained=False." in message or "\n" in message]
