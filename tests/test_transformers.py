"""Hugging Face transformers, the real package (.ci/run installs it; elsewhere these tests skip): the zoo's Hub
folders load with ``AutoModel.from_pretrained(folder)`` (transformers' ``TimmWrapperModel``) and
``AutoImageProcessor``, in float32, giving the features ``ladder_zoo.create_model`` gives on the same input; a
zoo-only network (the CIFAR stem) gets transformers' own error without ``import ladder_zoo`` and loads with it."""
import json
from importlib.util import find_spec

import pytest
import torch
from PIL import Image

import ladder_zoo
from helpers import SAMPLE, make_release, run_python

pytestmark = pytest.mark.skipif(find_spec("transformers") is None, reason="transformers is not installed (.ci/run "
                                "installs it)")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Hub folders as train.export writes them: a stock ResNet-18, a stock ViT with model_args, the CIFAR stem."""
    root = tmp_path_factory.mktemp("hub")
    return {name: make_release(root, name, tag, seed=9)[1] for name, tag in
            [("ladder_byol_r18", "run"), ("ladder_byol_vit_t4_cifar", "cifar10_200ep"), ("byol_r18_cifar", "run")]}


def zoo_features(name, folder, x):
    model = ladder_zoo.create_model(name, checkpoint_path=folder, features_only=True).eval()
    pooled = ladder_zoo.create_model(name, checkpoint_path=folder).eval()
    with torch.no_grad():
        return model(x), pooled(x), model.feature_info.out_indices


@pytest.mark.parametrize("name", ["ladder_byol_r18", "ladder_byol_vit_t4_cifar"])
def test_automodel_loads_a_stock_timm_architecture_with_the_zoo_features(folders, name):
    import transformers

    folder = folders[name]
    config = json.loads((folder / "config.json").read_text())
    assert "num_classes" not in config.get("model_args", {})  # TimmWrapperModel passes num_classes=0 itself
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    assert type(model).__name__ == "TimmWrapperModel" and type(model.timm_model).__module__.startswith("timm.")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # not the files' fp16
    size = ladder_zoo.models.ARCHS[ladder_zoo.models.MODELS[name].arch].data["input_size"][1:]
    x = torch.randn(2, 3, *size)
    levels, pooled, indices = zoo_features(name, folder, x)
    with torch.no_grad():
        out = model(x, output_hidden_states=list(indices))
    for got, want in zip(out.hidden_states, levels, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.pooler_output, pooled)


def test_autoimageprocessor_preprocesses_as_the_zoo(folders):
    import timm.data
    import transformers

    folder = folders["ladder_byol_r18"]
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    model = ladder_zoo.create_model("ladder_byol_r18", checkpoint_path=folder)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    image = Image.open(sorted(SAMPLE.glob("test/*/*.jpg"))[0]).convert("RGB").resize((300, 260))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, transform(image).unsqueeze(0))


def test_the_cifar_stem_loads_after_import_ladder_zoo(folders, tmp_path):
    """In a fresh interpreter: transformers' own ImportError without ladder_zoo, the zoo's features with it."""
    folder = folders["byol_r18_cifar"]
    code = f"""
        import torch, transformers
        try:
            transformers.AutoModel.from_pretrained({str(folder)!r})
        except ImportError as e:
            print("error:", e)
        import ladder_zoo
        model = transformers.AutoModel.from_pretrained({str(folder)!r}).eval()
        zoo = ladder_zoo.create_model("byol_r18_cifar", checkpoint_path={str(folder)!r}, features_only=True).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            out = model(x, output_hidden_states=True)
            same = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out.hidden_states, zoo(x), strict=True))
        print("loaded:", type(model.timm_model).__name__, same)
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("error: The model architecture 'byol_r18_cifar' is not supported")
    assert lines[-1] == "loaded: CifarResNet True"
