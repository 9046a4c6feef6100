"""mmsegmentation 1.x, the real package (.ci/run installs it; elsewhere these tests skip with the reason): the
paper's FCN-D8 configs of configs/mmseg/ inherit mmseg's own from the installed package, run one training iteration
and a validation (mIoU) as mmseg's tools/train.py runs them (its Runner), on a few CIFAR-10 images laid out as
mmseg's PascalVOCDataset reads them, with the backbone's weights from the zoo's file; one setting switches the
zoo name; names FCN-D8 cannot dilate get one line."""
import json
import shutil
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, SAMPLE, make_release

pytestmark = pytest.mark.skipif(find_spec("mmseg") is None, reason="mmsegmentation is not installed (.ci/run installs it)")

CONFIGS = ROOT / "configs" / "mmseg"
VOC = CONFIGS / "fcn_ladder-byol-r50-d8_4xb4-20k_voc12aug-512x512.py"
CITYSCAPES = CONFIGS / "fcn_ladder-byol-r50-d8_4xb2-40k_cityscapes-769x769.py"
CROP = 32  # px: the configs' 512 / 769 crops cut down to the CIFAR images' size, for the CPU


@pytest.fixture(scope="module", autouse=True)
def registry():
    """mmseg's model registry, LadderZooEncoderDecoder in it (as the configs' custom_imports register it), mmseg's
    scope the default; imported here, not at collection, where every worker of the parallel run would pay for it."""
    pytest.importorskip("mmseg.models")  # mmseg 1.2.2 imports ftfy there (not among its requirements: mmseg#3704)
    import ladder_zoo.integrations.mmseg  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    return MODELS


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """ladder_byol_r50.in1k_200ep released in a local Hub root of its own: the weights the config names."""
    from ladder_zoo import hub

    root = tmp_path_factory.mktemp("hub")
    repo, _, entry, state = make_release(root, "ladder_byol_r50", "in1k_200ep", seed=5)
    record = root / "releases.json"
    record.write_text(json.dumps({repo: entry}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(hub.RELEASES_ENV, str(record))
        mp.setenv(hub.HUB_DIR_ENV, str(root))
        yield state


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """Four CIFAR-10 images as mmseg's PascalVOCDataset reads VOC2012 + SBD: JPEGImages/, SegmentationClass/ and
    SegmentationClassAug/ (class index PNGs, 255 ignored), ImageSets/Segmentation/{train,aug,val}.txt."""
    root = tmp_path_factory.mktemp("VOC2012")
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    ids = []
    for k, path in enumerate(sorted(SAMPLE.glob("test/*/*.jpg"))[::10]):
        ids.append(f"2007_{k:06d}")
        shutil.copy(path, root / "JPEGImages" / f"{ids[-1]}.jpg")
        label = np.zeros((32, 32), np.uint8)
        label[8:24, 4 + k:28 - k] = 1 + 5 * k  # one object of class 1, 6, 11, 16 on background
        label[7, :] = 255  # a boundary, ignored as VOC's
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            Image.fromarray(label).save(root / folder / f"{ids[-1]}.png")
    for split, names in (("train", ids[:2]), ("aug", ids[2:]), ("val", ids[:2])):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def tiny(cfg, data_root, work_dir):
    """``cfg`` on ``data_root`` with CROP-px crops, 2 images a batch, in this process, one iteration, no checkpoint."""
    datasets = [*cfg.train_dataloader.dataset.datasets, cfg.val_dataloader.dataset, cfg.test_dataloader.dataset]
    for dataset in datasets:
        dataset.data_root = str(data_root)
        for step in dataset.pipeline:
            if step.type in ("RandomResize", "Resize"):
                step.scale = (2 * CROP, CROP)
            if step.type == "RandomCrop":
                step.crop_size = (CROP, CROP)
            if step.type == "Pad":
                step.size = (CROP, CROP)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.update(batch_size=2 if loader is cfg.train_dataloader else 1, num_workers=0, persistent_workers=False)
    cfg.model.data_preprocessor.size = (CROP, CROP)
    cfg.train_cfg.update(max_iters=1, val_interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    return cfg


def test_voc_config_trains_one_iteration_and_validates_with_the_zoo_weights(release, voc_root, tmp_path):
    """The VOC config as tools/train.py runs it (Config.fromfile, Runner.from_cfg, train: one iteration, then the
    validation loop's inference and mIoU), the backbone exactly the released file's weights before the step."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = tiny(Config.fromfile(str(VOC)), voc_root, tmp_path)
    assert cfg.default_scope == "mmseg" and cfg.model.backbone.output_stride == 8
    runner = Runner.from_cfg(cfg)
    model = runner.model
    model.init_weights()  # what runner.train() does first: the zoo weights must survive it
    body = model.backbone.body
    for key in ("conv1.weight", "layer3.5.bn3.running_var", "layer4.2.conv3.weight"):
        torch.testing.assert_close(body.state_dict()[key], release[key])
    assert (model.decode_head.in_channels, model.auxiliary_head.in_channels) == (2048, 1024)
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert body.layer4[1].conv2.dilation == (4, 4) and body.layer3[1].conv2.dilation == (2, 2)  # D8
    before = body.layer4[0].conv1.weight.detach().clone()
    runner.train()  # one iteration, then the validation loop (val_interval=1): inference on the val images
    assert not torch.equal(body.layer4[0].conv1.weight, before)  # frozen_stages=-1: res5 fine-tuned too
    assert 0 <= runner.message_hub.get_scalar("val/mIoU").current() <= 100


def test_one_setting_switches_the_zoo_name_and_cityscapes_builds(registry):
    """model.backbone.name alone switches the network: a ResNet-18 (res4 256, res5 512 channels) in the same FCN-D8
    (random weights here: pretrained=False, none is released); and the Cityscapes config builds (sliding-window
    test, align_corners) and segments at stride 8."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(CITYSCAPES))
    cfg.merge_from_dict({"model.backbone.name": "ladder_densebyol_r18", "model.backbone.pretrained": False})
    assert cfg.model.test_cfg.mode == "slide" and cfg.model.decode_head.align_corners
    model = registry.build(cfg.model).eval()
    assert (model.decode_head.in_channels, model.auxiliary_head.in_channels) == (512, 256)
    assert model.data_preprocessor.std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])
    # the pixel statistics are the weights' pretrained_cfg's, whatever the config's base says
    cfg.model.backbone.pretrained_cfg_overlay = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert registry.build(cfg.model).data_preprocessor.mean.flatten().tolist() == [127.5] * 3
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 40, 48), mode="tensor")
    assert logits.shape == (1, 19, 5, 6)  # 19 Cityscapes classes at stride 8


@pytest.mark.parametrize("name, problem", [
    ("ladder_byol_vit_t4_cifar", "has no dilated form"),
    ("ladder_byol_swin_t", "has no dilated form"),
    ("byol_r18_cifar", "has the CIFAR stem"),
])
def test_names_fcn_d8_cannot_dilate_get_one_line(name, problem, registry):
    from mmengine.config import Config

    cfg = Config.fromfile(str(VOC))
    cfg.model.backbone.update(name=name, pretrained=False)
    with pytest.raises(ValueError, match=problem) as error:
        registry.build(cfg.model)
    assert "\n" not in str(error.value) and "r18, r50, convnext_t" in str(error.value)


def test_mmseg_own_resnet_loads_the_zoo_weights_by_the_scheme(release, registry):
    """Or keep mmseg's own ResNet (torchvision's parameter names, as the zoo's), D8, weights by ladder-zoo://."""
    backbone = registry.build(dict(type="ResNet", depth=50, dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                                 contract_dilation=True, init_cfg=dict(
                                     type="Pretrained", checkpoint="ladder-zoo://ladder_byol_r50.in1k_200ep")))
    backbone.init_weights()
    state = backbone.state_dict()
    assert set(state) == {k for k in release if not k.startswith("fc.")}  # every key, none left over
    for key in ("conv1.weight", "layer3.5.bn3.running_var", "layer4.2.conv3.weight"):
        torch.testing.assert_close(state[key], release[key])
