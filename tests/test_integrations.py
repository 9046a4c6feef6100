"""Detection adapters: a real torchvision Mask R-CNN step on CIFAR-10 images; detectron2 and mmdet as their users
meet them, against the real frameworks where installed (.ci/run installs them from ../shared/wheels; elsewhere
those tests skip): the README configs train one iteration and predict on two images with boxes and masks
(detectron2 through its command line), converter outputs load into each framework's own ResNet-50 config with
no backbone key missing or unexpected and give the zoo's features, ``ladder-zoo://`` in mmdet's ``init_cfg``;
and the same features from every entry point for every zoo name."""
import json
import logging
import pickle
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file
from torchvision.io import decode_image
from torchvision.ops.misc import FrozenBatchNorm2d

import ladder_zoo
from helpers import ROOT, SAMPLE, environ_without_hub, random_state_dict
from ladder_zoo.integrations import detectron2 as d2, mmdet as mm
from ladder_zoo.integrations.torchvision import backbone_with_fpn, fasterrcnn, fcn, maskrcnn, retinanet, zoo_backbone
from ladder_zoo.models import ARCHS

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
    assert stats == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "depth": depth}


def test_detection_adapters_refuse_the_cifar_stem():
    """A CIFAR-stem name under a detector ran silently: 800 px inputs, FPN at stride 1, minutes per image."""
    builders = [lambda: fasterrcnn("byol_r18_cifar", num_classes=3, pretrained=False),
                lambda: mm.LadderZooBackbone("byol_r18_cifar.cifar10_200ep", pretrained=False)]
    if d2.BACKBONE_REGISTRY is not None:
        builders.append(lambda: d2.LadderZooBackbone("ladder_byol_r18_cifar", pretrained=False))
    for build in builders:
        with pytest.raises(ValueError, match=r"has the CIFAR stem \(weights trained on 32 px images.*Use an "
                                             r"ImageNet-stem name \(r18 / r50"):
            build()


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


def trained_scale_r50(path: Path) -> Dict[str, torch.Tensor]:
    """ResNet-50 weights at a trained network's scale, saved to ``path``: the zoo's initialisation with every BN
    scale 1 (timm zero-inits each block's last one, which under frozen BN leaves res3-res5 without gradient) and
    BN statistics measured on the tiny set. ``random_state_dict``'s weights blow res5 up (mean |x| ~70), and one
    SGD step on a detector's losses then sends the features to 1e30 and the detector predicts nothing."""
    torch.manual_seed(0)
    model = ladder_zoo.create_model("ladder_byol_r50")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    mean, std = (torch.tensor(model.pretrained_cfg[k]).view(3, 1, 1) for k in ("mean", "std"))
    images = torch.stack([(image.permute(2, 0, 1) / 255 - mean) / std for image in tiny_detection_set()[0]])
    with torch.no_grad():
        model.train()(torch.cat([images, images.flip(-1)]))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state


@contextmanager
def mmengine_log():
    """The messages mmengine's current logger emits (MMLogger instances have no parent: caplog sees nothing)."""
    from mmengine.logging import MMLogger

    messages, handler = [], logging.Handler(logging.DEBUG)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def tiny_detection_set(size=(96, 128)):
    """Two images (uint8 HWC) with one box ([x0, y0, x1, y1]) and one filled-rectangle mask each, classes 0 and 1."""
    generator = torch.Generator().manual_seed(0)
    images, boxes = [], []
    for k in range(2):
        image = (torch.rand(*size, 3, generator=generator) * 60).to(torch.uint8)
        x0, y0, x1, y1 = 16 + 8 * k, 20, 80, size[0] - 20 - 8 * k
        image[y0:y1, x0:x1] = torch.tensor([200, 60 + 80 * k, 40], dtype=torch.uint8)
        images.append(image)
        boxes.append([x0, y0, x1, y1])
    return images, boxes


def write_tiny_coco(root: Path) -> Path:
    """The tiny set as a COCO dataset: root/images/{0,1}.png and root/instances.json (polygon masks)."""
    from PIL import Image

    images, boxes = tiny_detection_set()
    (root / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for k, (image, (x0, y0, x1, y1)) in enumerate(zip(images, boxes)):
        Image.fromarray(image.numpy()).save(root / "images" / f"{k}.png")
        coco["images"].append({"id": k + 1, "file_name": f"{k}.png", "height": image.shape[0], "width": image.shape[1]})
        coco["annotations"].append({"id": k + 1, "image_id": k + 1, "category_id": k + 1, "iscrowd": 0,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "instances.json"


def test_detectron2_command_line_trains_and_evaluates_the_readme_config(tmp_path):
    """What a detectron2 user runs: train_net's route on the README's YAML (MODEL.LADDER_ZOO keys added), one
    iteration on a registered COCO-format set of two images with boxes and masks, then COCO evaluation."""
    pytest.importorskip("detectron2")  # not on PyPI: ../shared/wheels or a source build
    state = trained_scale_r50(tmp_path / "w.safetensors")
    ann = write_tiny_coco(tmp_path / "coco")
    out = tmp_path / "out"
    env = environ_without_hub()
    cmd = [sys.executable, "-m", "ladder_zoo.integrations.detectron2_train",
           "--config-file", str(CONFIGS / "detectron2" / "mask_rcnn_ladder_byol_r50_fpn_1x.yaml"),
           "--register-coco", "tiny", str(ann), str(tmp_path / "coco" / "images"),
           "MODEL.DEVICE", "cpu", "MODEL.LADDER_ZOO.CHECKPOINT", str(tmp_path / "w.safetensors"),
           "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
           "DATASETS.TRAIN", "('tiny',)", "DATASETS.TEST", "('tiny',)", "DATALOADER.NUM_WORKERS", "0",
           "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_ITERS", "0",
           "SOLVER.WEIGHT_DECAY", "0.0",
           "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
           "INPUT.MAX_SIZE_TEST", "128", "OUTPUT_DIR", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "Starting training from iteration 0" in log and "Evaluation results for tiny" in log
    predictions = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert predictions and {"image_id", "bbox", "score", "segmentation"} <= set(predictions[0])
    assert {p["image_id"] for p in predictions} == {1, 2}

    # one SGD step (no warm-up, no weight decay): a weight moved exactly where its gradient was non-zero
    trained = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    body = {k[len("backbone.bottom_up.model."):]: torch.as_tensor(v) for k, v in trained.items()
            if k.startswith("backbone.bottom_up.model.")}
    for frozen in ("conv1.weight", "layer1.0.conv1.weight", "layer1.2.conv3.weight"):  # FREEZE_AT 2: stem, res2
        assert torch.equal(body[frozen], state[frozen]), frozen
    for trainable in ("layer2.0.conv1.weight", "layer3.5.conv3.weight", "layer4.0.conv1.weight",
                      "layer4.2.conv3.weight"):
        assert not torch.equal(body[trainable], state[trainable]), trainable
    assert torch.equal(body["layer3.0.bn1.running_mean"], state["layer3.0.bn1.running_mean"])  # FrozenBN


def test_detectron2_command_line_names_bad_input(tmp_path):
    pytest.importorskip("detectron2")
    from ladder_zoo.integrations.detectron2_train import config_file, register_datasets

    for path, message in (("", "--config-file is required"),
                          (str(tmp_path / "nope.yaml"), "no such file, nor a detectron2 model-zoo config name")):
        with pytest.raises(SystemExit, match=message) as error:
            config_file(path)
        assert "\n" not in str(error.value)
    with pytest.raises(SystemExit, match=r"--register-coco x: JSON .*nope.json does not exist"):
        register_datasets([("x", str(tmp_path / "nope.json"), str(tmp_path))])
    with pytest.raises(ValueError, match=r"OUT_FEATURES=\['res6'\]: choose among res2, res3, res4, res5"):
        d2.LadderZooBackbone("byol_r18", out_features=["res6"], pretrained=False)


def test_detectron2_own_r50_fpn_loads_the_converter_output(tmp_path, caplog):
    """``ladder-zoo convert --to detectron2`` into detectron2's own Mask R-CNN R50-FPN config (model zoo, which
    needs pkg_resources: setuptools<81), with the settings the converter prints: only FPN and head keys missing,
    and the bottom-up features equal the zoo model's. The config as the command line's setup reads it."""
    pytest.importorskip("detectron2")
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from ladder_zoo.integrations.detectron2_train import config_file

    save_file(random_state_dict("ladder_byol_r50", seed=9), str(tmp_path / "w.safetensors"))
    stats = d2.convert("ladder_byol_r50", tmp_path / "r50.pkl", checkpoint=str(tmp_path / "w.safetensors"))
    name = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    assert config_file(name) == model_zoo.get_config_file(name)
    cfg = get_cfg()
    d2.add_ladder_zoo_config(cfg)
    cfg.merge_from_file(config_file(name))
    cfg.merge_from_list(["MODEL.WEIGHTS", str(tmp_path / "r50.pkl"), "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                         "INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", str(stats["mean"]), "MODEL.PIXEL_STD",
                         str(stats["std"]), "MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    caplog.set_level(logging.INFO)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith(("fvcore", "detectron2"))]
    assert any("Loading from" in m for m in messages)  # the checkpointer's log is captured
    assert not any("not used by the model" in m for m in messages)  # nothing unexpected
    missing = [m for m in messages if "not found in the checkpoint" in m]
    assert len(missing) == 1
    groups = {line.split(".")[1] if line.startswith("backbone.") else line.split(".")[0]
              for line in missing[0].splitlines()[1:]}
    assert groups == {*(f"fpn_{kind}{k}" for kind in ("lateral", "output") for k in range(2, 6)),
                      "proposal_generator", "roi_heads"}
    zoo = ladder_zoo.create_model("ladder_byol_r50", features_only=True, out_indices=(1, 2, 3, 4),
                                  checkpoint_path=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = zoo(x), model.backbone.bottom_up(x)
    for level, ref in zip(("res2", "res3", "res4", "res5"), ours):
        assert float((theirs[level] - ref).norm() / ref.norm()) < 1e-5, level


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


def mmdet_batch():
    """The tiny set as mmdet's ``train_step`` / ``test_step`` input: RGB uint8 CHW images, boxes, bitmap masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    images, boxes = tiny_detection_set()
    samples = []
    for k, (image, (x0, y0, x1, y1)) in enumerate(zip(images, boxes)):
        h, w = image.shape[:2]
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        masks = torch.zeros(1, h, w, dtype=torch.uint8)
        masks[:, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                                           labels=torch.tensor([k]), masks=BitmapMasks(masks.numpy(), h, w))
        samples.append(sample)
    return {"inputs": [image.flip(-1).permute(2, 0, 1).contiguous() for image in images],  # BGR, as mmdet decodes
            "data_samples": samples}


def test_mmdet_readme_config_trains_and_predicts(tmp_path):
    """The README's mmdet config as mmdet's tools/train.py builds it (its custom_imports and default scope), one
    training iteration and one inference on two images with boxes and masks, the backbone's weights from a file."""
    pytest.importorskip("mmdet")  # needs mmcv with compiled ops: ../shared/wheels or a source build
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(CONFIGS / "mmdet" / "mask-rcnn_ladder-byol-r50_fpn_1x_coco.py"))
    init_default_scope(cfg.default_scope)
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    cfg.model.backbone.checkpoint = str(tmp_path / "w.safetensors")
    state = trained_scale_r50(tmp_path / "w.safetensors")
    model = MODELS.build(cfg.model)
    model.init_weights()
    body = model.backbone.body
    torch.testing.assert_close(body.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    watched = ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer3.5.conv3.weight",
               "layer4.2.conv3.weight")
    before = {k: body.state_dict()[k].clone() for k in watched}
    model.train()
    log = model.train_step(mmdet_batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.001)))
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"} <= set(log)
    assert all(torch.isfinite(v) for v in log.values())
    after = body.state_dict()
    for k in watched[:2]:  # frozen_stages=1: the stem and res2 stay
        assert torch.equal(after[k], before[k]), k
    for k in watched[2:]:  # plain SGD: res3..res5 moved by their (non-zero) gradients
        assert not torch.equal(after[k], before[k]), k
    model.eval()
    with torch.no_grad():
        predictions = model.test_step(mmdet_batch())
    for sample, pred in zip(mmdet_batch()["data_samples"], predictions):
        instances = pred.pred_instances
        assert len(instances) > 0 and instances.bboxes.shape[1] == 4
        assert tuple(instances.masks.shape[1:]) == sample.ori_shape


def mmdet_own_resnet50(checkpoint: str):
    """The backbone of mmdet's own Mask R-CNN R50-FPN 1x config, its ``init_cfg`` pointed at ``checkpoint``."""
    import mmdet
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim/configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"))
    init_default_scope(cfg.default_scope)
    assert cfg.model.data_preprocessor.bgr_to_rgb and cfg.model.backbone.style == "pytorch"  # the zoo's convention
    backbone = MODELS.build({**cfg.model.backbone, "init_cfg": dict(type="Pretrained", checkpoint=checkpoint)})
    backbone.init_weights()
    backbone.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return backbone


def test_mmdet_own_resnet50_loads_the_converter_output_and_the_scheme(r50_release, tmp_path):
    pytest.importorskip("mmdet")
    save_file(random_state_dict("ladder_byol_r50", seed=11), str(tmp_path / "w.safetensors"))
    mm.convert("ladder_byol_r50", tmp_path / "r50.pth", checkpoint=str(tmp_path / "w.safetensors"))
    x = torch.randn(2, 3, 64, 64)
    for source, zoo_kwargs in ((str(tmp_path / "r50.pth"), dict(checkpoint_path=tmp_path / "w.safetensors")),
                               ("ladder-zoo://ladder_byol_r50.in1k_200ep", dict(pretrained=True))):
        with mmengine_log() as messages:
            backbone = mmdet_own_resnet50(source)
        assert any("Loads checkpoint" in m for m in messages), source  # mmengine's log is captured
        assert not any("do not match" in m or "missing keys" in m or "unexpected key" in m for m in messages), source
        zoo = ladder_zoo.create_model("ladder_byol_r50" if "pth" in source else "ladder_byol_r50.in1k_200ep",
                                      features_only=True, out_indices=(1, 2, 3, 4), **zoo_kwargs).eval()
        with torch.no_grad():
            ours, theirs = zoo(x), backbone(x)
        for ref, got in zip(ours, theirs):
            assert got.shape == ref.shape and float((got - ref).norm() / ref.norm()) < 1e-5, source


# --- one backbone everywhere ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["r50", "r18", "r18_cifar"])
def test_every_name_gives_the_same_features_through_every_entry_point(arch, tmp_path):
    """Every name through create_model and torch.hub (the name-specific registrations), and through the adapters in
    turn: an adapter passes the name to create_model untouched, so each sees every arch and a third of the names
    (all of them, with detectron2 installed, would build 40 ResNet-50s: over a minute on two cores)."""
    state = random_state_dict(f"byol_{arch}", seed=1)
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    size = 32 if arch == "r18_cifar" else 64
    x = torch.randn(2, 3, size, size)
    adapters = {}  # the detection adapters refuse the CIFAR stem (test_detection_adapters_refuse_the_cifar_stem)
    if ARCHS[arch].family == "resnet":
        adapters["mmdet"] = lambda name, ref: list(mm.LadderZooBackbone(
            name, out_indices=(0, 1, 2, 3, 4), checkpoint=str(weights), frozen_stages=-1).eval()(x))
        adapters["torchvision"] = lambda name, ref: ref[:1] + list(
            backbone_with_fpn(name, checkpoint_path=weights).body.eval()(x).values())
        if d2.BACKBONE_REGISTRY is not None:
            adapters["detectron2"] = lambda name, ref: ref[:1] + list(
                d2.LadderZooBackbone(name, checkpoint=str(weights)).eval()(x).values())
    seen = set()
    for i, name in enumerate(ladder_zoo.list_models(f"*_{arch}")):
        with torch.no_grad():
            ref = ladder_zoo.create_model(name, features_only=True, checkpoint_path=weights).eval()(x)
            paths = {"torch.hub": torch.hub.load(str(ROOT), name, source="local", features_only=True,
                                                 checkpoint_path=weights).eval()(x)}
            if adapters:
                adapter = sorted(adapters)[i % len(adapters)]
                seen.add(adapter)
                paths[adapter] = adapters[adapter](name, ref)
        for where, maps in paths.items():  # FrozenBatchNorm2d's fused arithmetic rounds differently: 1e-6
            assert len(maps) == 5, (name, where)
            for a, b in zip(maps, ref):
                assert a.shape == b.shape and float((a - b).norm() / b.norm()) < 1e-5, f"{name} via {where}"
    assert seen == set(adapters)
