"""Detection adapters: a real torchvision Mask R-CNN step on CIFAR-10 images, detectron2 and mmdet weight
converters against those frameworks' ResNet parameter names, the mmdet backbone through the real mmengine
registry and Config, and the same features from every entry point for every zoo name."""
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file
from torchvision.io import decode_image
from torchvision.ops.misc import FrozenBatchNorm2d

import ladder_zoo
from helpers import ROOT, SAMPLE, random_state_dict
from ladder_zoo.integrations import detectron2 as d2, mmdet as mm
from ladder_zoo.integrations.torchvision import backbone_with_fpn, fcn, maskrcnn, retinanet, zoo_backbone

CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _isolated(isolated_hub):
    """Each test decides which weights exist."""


@pytest.fixture
def r50_release(isolated_hub):
    return isolated_hub("ladder_byol_r50", "in1k_200ep", seed=31)


# --- torchvision ---------------------------------------------------------------------------------------------
def test_maskrcnn_train_step_and_eval_on_real_images(tmp_path):
    torch.manual_seed(0)
    save_file(random_state_dict("ladder_byol_r18", seed=3), str(tmp_path / "w.safetensors"))
    images = [decode_image(str(p)).float() / 255 for p in sorted(SAMPLE.glob("test/*/*.jpg"))[::10]]  # 4 images
    targets = []
    for k, _ in enumerate(images):
        box = torch.tensor([[4.0 + k, 6.0, 26.0, 28.0 - k]])
        mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
        mask[:, 6:28 - k, 4 + k:26] = 1
        targets.append({"boxes": box, "labels": torch.tensor([1 + k % 3]), "masks": mask})
    model = maskrcnn("ladder_byol_r18", num_classes=4, checkpoint_path=tmp_path / "w.safetensors", trainable_layers=3,
                     min_size=128, max_size=128)
    assert model.transform.image_mean == list(ladder_zoo.models.IMAGENET_DEFAULT_MEAN)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    body = model.backbone.body
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None  # frozen: stem, res2
    assert body.layer2[0].conv1.weight.grad.abs().sum() > 0 and body.layer4[0].conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 4 and {"boxes", "labels", "scores", "masks"} <= set(out[0])


def test_fpn_retinanet_and_fcn_shapes():
    fpn = backbone_with_fpn("ladder_densebyol_r50", pretrained=False).eval()
    with torch.no_grad():
        maps = fpn(torch.randn(1, 3, 128, 128))
    assert [tuple(v.shape[1:]) for v in maps.values()] == [(256, 32, 32), (256, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2)]
    net = retinanet("byol_r18", num_classes=3, pretrained=False, min_size=96, max_size=96).eval()
    with torch.no_grad():
        assert {"boxes", "scores", "labels"} <= set(net([torch.rand(3, 96, 96)])[0])
    seg = fcn("byol_r50", num_classes=21, pretrained=False).eval()
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 64, 64))["out"].shape == (1, 21, 64, 64)
        assert seg.backbone(torch.randn(1, 3, 64, 64))["out"].shape[-1] == 8  # stride 8 (dilated res4, res5)
    cifar = fcn("byol_r18_cifar", num_classes=10, pretrained=False).eval()
    with torch.no_grad():
        assert cifar(torch.randn(1, 3, 32, 32))["out"].shape == (1, 10, 32, 32)
    with pytest.raises(ValueError, match="trainable_layers"):
        zoo_backbone("byol_r18", pretrained=False, trainable_layers=6)


def test_pretrained_detector_uses_the_zoo_weights(r50_release):
    model = maskrcnn("ladder_byol_r50.in1k_200ep", num_classes=5)
    frozen = model.backbone.body.layer3[1].bn2
    torch.testing.assert_close(frozen.running_var, r50_release["layer3.1.bn2.running_var"])
    torch.testing.assert_close(model.backbone.body.layer4[2].conv3.weight, r50_release["layer4.2.conv3.weight"])


# --- detectron2 ----------------------------------------------------------------------------------------------
def detectron2_resnet_names(depth: int):
    """detectron2's ResNet parameter and buffer names, from its documented architecture (ResNet, BasicStem,
    BottleneckBlock / BasicBlock, Conv2d with FrozenBatchNorm2d norms, shortcut where channels change)."""
    norm = ("weight", "bias", "running_mean", "running_var")
    names = {"stem.conv1.weight", *(f"stem.conv1.norm.{n}" for n in norm)}
    blocks, convs = {18: ((2, 2, 2, 2), 2), 50: ((3, 4, 6, 3), 3)}[depth]
    out = {18: (64, 128, 256, 512), 50: (256, 512, 1024, 2048)}[depth]
    in_ch = 64
    for stage, (n, ch) in enumerate(zip(blocks, out)):
        for b in range(n):
            prefix = f"res{stage + 2}.{b}"
            for c in range(1, convs + 1):
                names |= {f"{prefix}.conv{c}.weight", *(f"{prefix}.conv{c}.norm.{x}" for x in norm)}
            if b == 0 and in_ch != ch:
                names |= {f"{prefix}.shortcut.weight", *(f"{prefix}.shortcut.norm.{x}" for x in norm)}
            in_ch = ch
    return names


@pytest.mark.parametrize("name,depth", [("ladder_byol_r50", 50), ("simsiam_r18", 18)])
def test_detectron2_converter_writes_detectron2_resnet_names(name, depth, tmp_path):
    state = random_state_dict(name, seed=depth)
    save_file(state, str(tmp_path / "w.safetensors"))
    stats = d2.convert(name, tmp_path / "out.pkl", checkpoint=str(tmp_path / "w.safetensors"))
    with open(tmp_path / "out.pkl", "rb") as f:
        blob = pickle.load(f)
    assert blob["matching_heuristics"] is True
    assert set(blob["model"]) == detectron2_resnet_names(depth)
    assert (blob["model"]["res3.0.shortcut.norm.running_var"] == state["layer2.0.downsample.1.running_var"].numpy()).all()
    assert (blob["model"]["stem.conv1.norm.weight"] == state["bn1.weight"].numpy()).all()
    assert stats == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def test_converters_refuse_the_cifar_stem(tmp_path):
    for module in (d2, mm):
        with pytest.raises(ValueError, match="CIFAR stem"):
            module.convert("byol_r18_cifar", tmp_path / "x")


def test_detectron2_example_config_is_consistent():
    cfg = yaml.safe_load((CONFIGS / "detectron2" / "mask_rcnn_ladder_byol_r50_fpn_1x.yaml").read_text())
    model = cfg["MODEL"]
    source = Path(d2.__file__).read_text()
    assert f"def {model['BACKBONE']['NAME']}(cfg, input_shape)" in source
    assert model["LADDER_ZOO"]["NAME"] in ladder_zoo.list_pretrained(published_only=False)
    stats = d2.pixel_stats(ladder_zoo.create_model(model["LADDER_ZOO"]["NAME"].split(".")[0]))
    assert (model["PIXEL_MEAN"], model["PIXEL_STD"], cfg["INPUT"]["FORMAT"]) == (stats["mean"], stats["std"], "RGB")
    assert model["FPN"]["IN_FEATURES"] == model["LADDER_ZOO"]["OUT_FEATURES"] == ["res2", "res3", "res4", "res5"]


def test_detectron2_backbone_where_detectron2_is_installed():
    detectron2 = pytest.importorskip("detectron2")  # not on PyPI: runs where it was built from source
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    d2.add_ladder_zoo_config(cfg)
    cfg.merge_from_file(str(CONFIGS / "detectron2" / "mask_rcnn_ladder_byol_r50_fpn_1x.yaml"))
    cfg.MODEL.LADDER_ZOO.PRETRAINED = False
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    shapes = model.backbone.bottom_up.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    assert detectron2.__version__


# --- mmdet / mmengine ----------------------------------------------------------------------------------------
def test_mmdet_converter_loads_into_resnet_with_mmdet_names(tmp_path):
    """mmdet's ResNet names its parameters as torchvision's ResNet-50 does: the checkpoint must load strictly."""
    state = random_state_dict("byol_r50", seed=7)
    save_file(state, str(tmp_path / "w.safetensors"))
    mm.convert("byol_r50", tmp_path / "out.pth", checkpoint=str(tmp_path / "w.safetensors"))
    blob = torch.load(tmp_path / "out.pth", weights_only=True)
    reference = torchvision.models.resnet50()
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(blob["state_dict"], strict=True)
    torch.testing.assert_close(reference.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert blob["meta"]["mean"] == [123.675, 116.28, 103.53]


def test_mmengine_checkpoint_scheme_loads_zoo_weights(r50_release):
    from mmengine.runner import load_checkpoint

    resnet = torchvision.models.resnet50()
    resnet.fc = torch.nn.Identity()
    load_checkpoint(resnet, "ladder-zoo://ladder_byol_r50.in1k_200ep", strict=True)
    torch.testing.assert_close(resnet.layer2[3].bn3.running_mean, r50_release["layer2.3.bn3.running_mean"])


def test_mmdet_backbone_through_the_mmengine_registry(r50_release):
    from mmengine.registry import MODELS

    backbone = MODELS.build(dict(type="LadderZooBackbone", name="ladder_byol_r50.in1k_200ep", frozen_stages=1))
    backbone.init_weights()  # the ladder_zoo weights stay: mmengine's initialisation does not overwrite them
    torch.testing.assert_close(backbone.body.layer4[0].conv1.weight, r50_release["layer4.0.conv1.weight"])
    backbone.train()
    assert not backbone.body.layer1.training and backbone.body.layer2.training is True
    assert not any(p.requires_grad for p in backbone.body.layer1.parameters())
    assert all(not m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))  # norm_eval
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [(f.shape[1], 64 // f.shape[-1]) for f in feats] == [(256, 4), (512, 8), (1024, 16), (2048, 32)]

    lazy = MODELS.build(dict(type="LadderZooBackbone", name="ladder_byol_r50", out_indices=(3, 4),
                             init_cfg=dict(type="Pretrained", checkpoint="ladder-zoo://ladder_byol_r50.in1k_200ep")))
    assert not torch.equal(lazy.body.layer4[0].conv1.weight, r50_release["layer4.0.conv1.weight"])
    lazy.init_weights()
    torch.testing.assert_close(lazy.body.layer4[0].conv1.weight, r50_release["layer4.0.conv1.weight"])


def test_mmdet_example_config_builds_its_backbone():
    from mmengine.config import Config
    from mmengine.registry import MODELS

    cfg = Config.fromfile(str(CONFIGS / "mmdet" / "mask-rcnn_ladder-byol-r50_fpn_1x_coco.py"))
    stats = mm.pixel_stats(ladder_zoo.create_model(cfg.model.backbone.name.split(".")[0]))
    pre = cfg.model.data_preprocessor
    assert (pre.mean, pre.std, pre.bgr_to_rgb) == (stats["mean"], stats["std"], True)
    backbone = MODELS.build({**cfg.model.backbone, "pretrained": False}).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == cfg.model.neck.in_channels
    assert cfg.model.rpn_head.anchor_generator.strides[:4] == [64 // f.shape[-1] for f in feats]


def test_mmdet_model_where_mmdet_is_installed():
    pytest.importorskip("mmdet")  # needs mmcv with compiled ops: not installable from the registry here
    from mmdet.registry import MODELS
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / "mmdet" / "mask-rcnn_ladder-byol-r50_fpn_1x_coco.py"))
    cfg.model.backbone.pretrained = False
    model = MODELS.build(cfg.model)
    assert model.backbone.body.feature_info.channels() == cfg.model.neck.in_channels


# --- one backbone everywhere ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["r50", "r18", "r18_cifar"])
def test_every_name_gives_the_same_features_through_every_entry_point(arch, tmp_path):
    state = random_state_dict(f"byol_{arch}", seed=1)
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    size = 32 if arch == "r18_cifar" else 64
    x = torch.randn(2, 3, size, size)
    for name in ladder_zoo.list_models(f"*_{arch}"):
        with torch.no_grad():
            ref = ladder_zoo.create_model(name, features_only=True, checkpoint_path=weights).eval()(x)
            paths = {
                "torch.hub": torch.hub.load(str(ROOT), name, source="local", features_only=True,
                                            checkpoint_path=weights).eval()(x),
                "mmdet": list(mm.LadderZooBackbone(name, out_indices=(0, 1, 2, 3, 4), checkpoint=str(weights),
                                                   frozen_stages=-1).eval()(x)),
            }
            if not arch.endswith("_cifar"):
                body = backbone_with_fpn(name, checkpoint_path=weights).body.eval()
                paths["torchvision"] = ref[:1] + list(body(x).values())
            if d2.BACKBONE_REGISTRY is not None:
                paths["detectron2"] = ref[:1] + list(d2.LadderZooBackbone(name, checkpoint=str(weights)).eval()(x).values())
        for where, maps in paths.items():  # FrozenBatchNorm2d's fused arithmetic rounds differently: 1e-6
            assert len(maps) == 5, (name, where)
            for a, b in zip(maps, ref):
                assert a.shape == b.shape and float((a - b).norm() / b.norm()) < 1e-5, f"{name} via {where}"
