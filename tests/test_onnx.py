"""ONNX export, with the real onnx, onnxscript and onnxruntime (.ci/run installs them; elsewhere these tests skip):
``ladder-zoo export-onnx`` writes a graph with one named output per level and a dynamic batch, which onnxruntime
runs as torch does; a network with a fixed input size refuses another in one line."""
from importlib.util import find_spec

import pytest
import torch
from safetensors.torch import save_file

import ladder_zoo
from helpers import random_state_dict, run_main
from ladder_zoo.cli import main
from ladder_zoo.integrations.onnx import output_names

MISSING = [package for package in ("onnx", "onnxscript", "onnxruntime") if find_spec(package) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (.ci/run installs them)")


def test_export_onnx_features_named_per_level_dynamic_batch_checked(tmp_path, capsys):
    save_file(random_state_dict("ladder_byol_r18", seed=4), str(tmp_path / "w.safetensors"))
    out = tmp_path / "r18.onnx"
    result = run_main(main, ["export-onnx", "ladder_byol_r18", "--checkpoint", str(tmp_path / "w.safetensors"),
                             "--out", str(out), "--features-only", "--size", "32", "48"], capsys)
    assert result.returncode == 0, result.stderr
    levels = ["stem", "res2", "res3", "res4", "res5"]
    assert f"outputs {', '.join(levels)}" in result.stdout
    assert "max abs difference stem " in result.stdout.splitlines()[-1]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert (image.name, image.shape) == ("pixel_values", ["batch", 3, 32, 48])
    assert [o.name for o in session.get_outputs()] == levels
    model = ladder_zoo.create_model("ladder_byol_r18", checkpoint_path=tmp_path / "w.safetensors",
                                    features_only=True).eval()
    x = torch.randn(1, 3, 32, 48)  # a batch size the export did not see
    with torch.no_grad():
        for got, want in zip(session.run(None, {"pixel_values": x.numpy()}), model(x), strict=True):
            assert (torch.from_numpy(got) - want).abs().max() <= 1e-5 * want.abs().max()  # fp32 rounding


def test_pooled_output_without_features_only():
    assert output_names(ladder_zoo.create_model("byol_r18_cifar")) == ["pooled"]
    vit = ladder_zoo.create_model("ladder_byol_vit_t4_cifar", features_only=True)
    assert output_names(vit) == ["stage2", "stage5", "stage8", "stage11"]  # as `ladder-zoo info` names them


def test_fixed_input_size_refuses_another_in_one_line(tmp_path, capsys):
    save_file(random_state_dict("ladder_byol_vit_t4_cifar", seed=4), str(tmp_path / "w.safetensors"))
    result = run_main(main, ["export-onnx", "ladder_byol_vit_t4_cifar", "--checkpoint", str(tmp_path / "w.safetensors"),
                             "--out", str(tmp_path / "vit.onnx"), "--size", "64", "64"], capsys)
    assert result.returncode == 2 and not (tmp_path / "vit.onnx").exists()
    assert result.stderr.count("\n") == 1 and "has a fixed input size, 32 x 32" in result.stderr
    assert "--size 32 32" in result.stderr


def test_a_size_refused_before_the_weights_are_downloaded(tmp_path, monkeypatch, capsys):
    """An external tag (MULAN's ViT-S, a download of 100 MB) at a size it cannot take: refused with nothing fetched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub's cache, where the download would go
    result = run_main(main, ["export-onnx", "byol_mt_vit_s16.mulan_in1k_200ep", "--out", str(tmp_path / "vit.onnx"),
                             "--size", "160", "160"], capsys)
    assert result.returncode == 2 and "has a fixed input size, 224 x 224" in result.stderr
    assert not (tmp_path / "torch").exists() and not (tmp_path / "vit.onnx").exists()
