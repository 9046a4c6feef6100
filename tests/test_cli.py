"""The ``ladder-zoo`` command: list, info, features (the README's main job), torch.hub entry points."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import ladder_zoo
from ladder_zoo.cli import main
from helpers import ROOT, reference_features

ARCH, TAG = "ladder_byol_r18_cifar", "cifar10_200ep"


@pytest.fixture
def released(isolated_hub):
    """ARCH.TAG published, with its only copy in a LADDER_ZOO_HUB_DIR folder."""
    return isolated_hub(ARCH, TAG, seed=21)


def released_folder(_):
    import os

    return os.path.join(os.environ["LADDER_ZOO_HUB_DIR"], "ladder-zoo", f"{ARCH}.{TAG}")


def test_list_and_info(released, capsys, tmp_path):
    from ladder_zoo import hub

    evaluation = {"knn": {"k": 200, "temperature": 0.1, "accuracy": {"res4": 0.5, "res5": 0.8123}},
                  "linear": {"epochs": 100, "accuracy": {"res4": 0.55, "res5": 0.8456}}}
    record = hub.releases_file()
    record.write_text(json.dumps({repo: {**entry, "evaluation": evaluation} for repo, entry in hub.releases().items()}))
    assert main(["list", "ladder_*"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    names = {line.split()[0] for line in lines[1:] if line.split()[0].startswith("ladder_")}
    assert "ladder_byol_r50" in names and "byol_r50" not in names and len(names) == 12 + 4  # ResNets, transformers
    assert sum(line.startswith(ARCH + " ") for line in lines) == 2  # a row per tag: cifar10_200ep, lightly_...
    assert max(map(len, lines)) <= 100
    row = next(line for line in lines if line.startswith(ARCH + " "))
    assert row.split()[1:] == [TAG, "ladder-zoo", "Apache-2.0", "81.2", "84.6", "CIFAR-10"]
    assert next(line for line in lines if line.startswith("ladder_byol_r50 ")).split()[1:] == ["in1k_200ep", "not", "yet"]
    assert main(["list", "byol_mt_r50"]) == 0  # others' weights: their source, licence and reported figure
    assert capsys.readouterr().out.splitlines()[1].split() == [
        "byol_mt_r50", "mulan_in1k_800ep", "MULAN", "MIT", "-", "76.7", "ImageNet-1k"]

    assert main(["list", "--pretrained", "ladder_*"]) == 0
    assert capsys.readouterr().out.split() == [f"{ARCH}.{TAG}"]

    assert main(["info", f"{ARCH}.{TAG}"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.split("pretrained_cfg:")[0].splitlines() if not line.startswith("  /")) <= 100
    assert "4      res5   layer4  512       8       81.2  84.6" in out and "1      res2   layer1  64        1       -" in out
    assert f"weights: released\n  {released_folder(released)}\n" in out and f"recipe: train/configs/{ARCH}_{TAG}.yaml" in out
    assert main(["info", "ladder_byol_r50"]) == 0
    out = capsys.readouterr().out
    assert "4      res5   layer4  2048      32" in out and '"input_size": [' in out and "plain timm architecture: resnet50" in out


def test_info_on_a_timm_name(capsys):
    """Any timm name works in the zoo (the unknown-name message says so): info describes it, as timm's."""
    assert main(["info", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resnet18: timm's model, not one of ladder-zoo's (`ladder-zoo list` shows the zoo)\n")
    assert "  4      res5   layer4  512       32\n" in out
    assert "weights: timm's own, tag a1_in1k, from the Hub repository timm/resnet18.a1_in1k" in out
    assert json.loads(out.split("pretrained_cfg:\n")[1])["architecture"] == "resnet18"
    assert main(["info", "convnext_atto.d2_in1k"]) == 0
    assert "  3      stage3  stages.3  320       32\n" in capsys.readouterr().out


def test_features_pretrained_saved(released, sample_images, tmp_path, capsys):
    out_file = tmp_path / "feats.safetensors"
    assert main(["features", f"{ARCH}.{TAG}", *map(str, sample_images[:5]), "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "(512, 4, 4)" in printed and "pretrained" in printed and str(sample_images[0]) in printed

    with safe_open(str(out_file), "pt") as f:
        assert sorted(f.keys()) == [f"stage{i}" for i in range(5)]
        stage4 = f.get_tensor("stage4")
        assert f.metadata()["weights"] == "pretrained"
    assert stage4.shape == (5, 512, 4, 4)
    model = ladder_zoo.create_model(ARCH, pretrained=True, features_only=True).eval()
    import timm.data
    from PIL import Image
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in sample_images[:5]])
    torch.testing.assert_close(stage4, reference_features(ARCH, released, x)[4])


def test_features_random_init_is_loud(sample_images, capsys):
    assert main(["features", "byol_r18_cifar", str(sample_images[0]), "--random-init"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: --random-init: RANDOM weights" in captured.err
    assert "random init" in captured.out


def test_features_without_weights_points_at_random_init(sample_images, capsys, isolated_hub):
    assert main(["features", "ladder_byol_r50", str(sample_images[0])]) == 2
    err = capsys.readouterr().err
    assert "No weights are published for ladder_byol_r50.in1k_200ep" in err and "--random-init" in err


def test_features_unreadable_image(sample_images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(sample_images[0].read_bytes()[:40])
    assert main(["features", "byol_r18_cifar", str(sample_images[0]), str(bad), "--random-init"]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err

    assert main(["features", "byol_r18_cifar", str(sample_images[0]), str(bad), "--random-init",
                 "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert f"skipped 1 unreadable image(s): {bad}" in captured.err and "1 images" in captured.out


def test_unknown_name_and_bad_out_indices(capsys):
    assert main(["info", "ladder_byol_r5"]) == 2
    assert "Close names: ladder_byol_r50" in capsys.readouterr().err
    assert main(["features", "byol_r18_cifar", "x.jpg", "--random-init", "--out-indices", "7"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_console_script_is_installed():
    # next to the interpreter running the tests: README's `.venv/bin/python -m pytest` works without activating
    exe = shutil.which("ladder-zoo", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . installs the ladder-zoo command"
    result = subprocess.run([exe, "list", "simsiam_*"], capture_output=True, text=True, check=True)
    assert "simsiam_r18_cifar" in result.stdout


def test_torch_hub_local_matches_create_model(released):
    names = {n for n in dir(__import__("hubconf")) if not n.startswith("_") and n != "dependencies"}
    assert names == set(ladder_zoo.list_models())
    model = torch.hub.load(str(ROOT), ARCH, source="local", pretrained=True, features_only=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), reference_features(ARCH, released, x)):
            torch.testing.assert_close(a, b)


def test_convert_prints_the_framework_settings(tmp_path, capsys):
    from safetensors.torch import save_file

    from helpers import random_state_dict

    save_file(random_state_dict("byol_r18", seed=2), str(tmp_path / "w.safetensors"))
    assert main(["convert", "byol_r18", "--to", "detectron2", str(tmp_path / "d2.pkl"),
                 "--checkpoint", str(tmp_path / "w.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.STRIDE_IN_1X1 False MODEL.RESNETS.RES2_OUT_CHANNELS 64" in out
    assert "INPUT.FORMAT RGB" in out and (tmp_path / "d2.pkl").is_file()
    assert main(["convert", "byol_r18", "--to", "mmdet", str(tmp_path / "mm.pth"),
                 "--checkpoint", str(tmp_path / "w.safetensors")]) == 0
    assert "bgr_to_rgb=True" in capsys.readouterr().out


def test_list_pretrained_says_when_nothing_is_published(isolated_hub, capsys):
    assert main(["list", "--pretrained", "ladder_*"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no published weights match 'ladder_*'" in captured.err
    assert "ladder-zoo list" in captured.err
    assert main(["info", "byol_mt_r50.mulan_in1k_200ep"]) == 0
    out = capsys.readouterr().out
    assert "weights: released by MULAN under MIT, not trained by ladder-zoo\n" in out and "recipe:" not in out
    assert "reported: 75.6 % top-1, ImageNet-1k linear evaluation, by MULAN's authors" in out


def test_features_from_a_checkpoint_say_so(tmp_path, sample_images, capsys):
    from safetensors.torch import save_file

    from helpers import random_state_dict

    save_file(random_state_dict(ARCH, seed=3), str(tmp_path / "w.safetensors"))
    out_file = tmp_path / "f.safetensors"
    assert main(["features", ARCH, *map(str, sample_images[:2]), "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--out", str(out_file)]) == 0
    assert f"{ARCH} (checkpoint {tmp_path / 'w.safetensors'}): 2 images" in capsys.readouterr().out
    with safe_open(str(out_file), "pt") as f:
        assert f.metadata()["weights"] == f"checkpoint {tmp_path / 'w.safetensors'}"


def test_features_reads_folders_and_writes_files_the_umask_allows(sample_images, tmp_path, capsys):
    import os

    folder = sample_images[0].parent.parent  # test/<class>/*.jpg: read recursively
    out_file = tmp_path / "feats.safetensors"
    previous = os.umask(0o022)
    try:
        assert main(["features", "byol_r18_cifar", str(folder), "--random-init", "--out", str(out_file)]) == 0
    finally:
        os.umask(previous)
    assert f"{len(list(folder.rglob('*.jpg')))} images" in capsys.readouterr().out
    assert out_file.stat().st_mode & 0o777 == 0o644  # as any file the user writes, not safetensors' 0600
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["features", "byol_r18_cifar", str(empty), "--random-init"]) == 2
    assert f"{empty} is a folder holding no images" in capsys.readouterr().err


@pytest.mark.parametrize("name, mmseg, transformers, onnx", [
    ("ladder_byol_r50", "FCN-D8 (output_stride=8)", "timm's resnet50", "any --size"),
    ("ladder_byol_swin_t", "no: fixed 224 x 224 input", "timm's swin_tiny", "--size 224 224 only"),
    ("byol_r18_cifar", "no: the CIFAR stem", "after `import ladder_zoo`", "any --size"),
])
def test_info_says_which_integrations_take_a_name(name, mmseg, transformers, onnx, capsys):
    assert main(["info", name]) == 0
    lines = capsys.readouterr().out.split("integrations:\n")[1].splitlines()[:3]
    assert [line.split()[0] for line in lines] == ["mmseg", "transformers", "ONNX"]
    assert max(map(len, lines)) <= 100
    for line, says in zip(lines, (mmseg, transformers, onnx)):
        assert says in line
