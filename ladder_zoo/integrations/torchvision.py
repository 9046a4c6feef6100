"""torchvision detection and segmentation on any zoo name (its tag's weights, or ``checkpoint_path``), as torchvision's own ``resnet_fpn_backbone`` builds
them: FrozenBatchNorm2d everywhere, ``trainable_layers`` of 5 counted from res5 down, an FPN over the chosen
stages with channels from ``feature_info``, and the image mean / std of the weights' ``pretrained_cfg``.

    from ladder_zoo.integrations.torchvision import maskrcnn
    model = maskrcnn("ladder_byol_r50.in1k_200ep", num_classes=91)          # pretrained backbone, fresh heads
"""
from collections import OrderedDict
from typing import Optional, Sequence

from timm.models import ResNet
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.segmentation.fcn import FCN, FCNHead
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from ..factory import create_model
from ._common import family, freeze_levels, frozen_batchnorm, refuse_cifar_stem


def zoo_backbone(name: str, pretrained: bool = True, trainable_layers: int = 3, **kwargs) -> nn.Module:
    """The bare zoo backbone with FrozenBatchNorm2d and all but the last ``trainable_layers`` of its 5 levels (stem,
    4 stages) frozen."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers={trainable_layers}: 0 (all frozen) to 5 (all trainable)")
    refuse_cifar_stem(name)
    model = frozen_batchnorm(create_model(name, pretrained=pretrained, **kwargs))
    freeze_levels(model, 5 - trainable_layers)
    return model


def backbone_with_fpn(
    name: str,
    pretrained: bool = True,
    trainable_layers: int = 3,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    out_channels: int = 256,
    extra_blocks: Optional[ExtraFPNBlock] = None,
    **kwargs,
) -> BackboneWithFPN:
    """``BackboneWithFPN`` over res(k+1) for k in ``returned_layers`` (1 = res2, stride 4 ... 4 = res5, stride 32);
    on Swin / ConvNeXt names, the same over their stages at strides 4 .. 32 (``HierarchicalWithFPN``)."""
    if not set(returned_layers) <= {1, 2, 3, 4}:
        raise ValueError(f"returned_layers={tuple(returned_layers)}: choose among 1 (res2) .. 4 (res5)")
    model = zoo_backbone(name, pretrained, trainable_layers, **kwargs)
    if not isinstance(model, ResNet):
        return HierarchicalWithFPN(model, name, returned_layers, out_channels, extra_blocks)
    channels = [model.feature_info[k]["num_chs"] for k in returned_layers]
    backbone = BackboneWithFPN(model, {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}, channels,
                               out_channels, extra_blocks=extra_blocks or LastLevelMaxPool())
    backbone.pretrained_cfg = model.pretrained_cfg
    return backbone


class HierarchicalWithFPN(nn.Module):
    """What ``BackboneWithFPN`` is for a ResNet, for any hierarchical timm backbone (Swin, ConvNeXt): its stages'
    NCHW maps (``forward_intermediates``) at strides 4 .. 32 into an FPN. ``model`` comes from ``zoo_backbone``,
    which froze its levels as a ResNet's (``trainable_layers`` from the last stage down, then the stem)."""

    def __init__(self, model: nn.Module, name: str, returned_layers: Sequence[int], out_channels: int,
                 extra_blocks: Optional[ExtraFPNBlock]):
        super().__init__()
        strides = {info["reduction"]: i for i, info in enumerate(model.feature_info)}
        if len(strides) == 1:
            raise ValueError(f"{name} is a plain ViT: every level is at stride {next(iter(strides))}, and an FPN "
                             "needs stages at strides 4 .. 32; use a hierarchical name (ladder_byol_swin_t, "
                             "ladder_byol_convnext_t), or build a ViTDet simple feature pyramid on its last block")
        missing = [2 ** (k + 1) for k in returned_layers if 2 ** (k + 1) not in strides]
        if missing:
            raise ValueError(f"{name} has no stage at stride(s) {missing} for returned_layers={tuple(returned_layers)}")
        self.indices = [strides[2 ** (k + 1)] for k in returned_layers]
        self.body = model
        self.fpn = FeaturePyramidNetwork([model.feature_info[i]["num_chs"] for i in self.indices], out_channels,
                                         extra_blocks=extra_blocks or LastLevelMaxPool())
        self.out_channels = out_channels
        self.pretrained_cfg = model.pretrained_cfg

    def forward(self, x):
        maps = self.body.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def _image_stats(backbone: BackboneWithFPN) -> dict:
    return dict(image_mean=list(backbone.pretrained_cfg["mean"]), image_std=list(backbone.pretrained_cfg["std"]))


def fasterrcnn(name: str, num_classes: int, pretrained: bool = True, trainable_layers: int = 3,
               checkpoint_path: Optional[str] = None, **kwargs) -> FasterRCNN:
    backbone = backbone_with_fpn(name, pretrained, trainable_layers, checkpoint_path=checkpoint_path)
    return FasterRCNN(backbone, num_classes=num_classes, **{**_image_stats(backbone), **kwargs})


def maskrcnn(name: str, num_classes: int, pretrained: bool = True, trainable_layers: int = 3,
             checkpoint_path: Optional[str] = None, **kwargs) -> MaskRCNN:
    backbone = backbone_with_fpn(name, pretrained, trainable_layers, checkpoint_path=checkpoint_path)
    return MaskRCNN(backbone, num_classes=num_classes, **{**_image_stats(backbone), **kwargs})


def retinanet(name: str, num_classes: int, pretrained: bool = True, trainable_layers: int = 3,
              checkpoint_path: Optional[str] = None, **kwargs) -> RetinaNet:
    """RetinaNet as torchvision's ``retinanet_resnet50_fpn``: FPN on res3..res5 plus P6, P7."""
    backbone = backbone_with_fpn(name, pretrained, trainable_layers, returned_layers=(2, 3, 4),
                                 extra_blocks=LastLevelP6P7(256, 256), checkpoint_path=checkpoint_path)
    return RetinaNet(backbone, num_classes=num_classes, **{**_image_stats(backbone), **kwargs})


def fcn(name: str, num_classes: int, pretrained: bool = True, output_stride: int = 8, **kwargs) -> FCN:
    """FCN-style segmentation on res5 at ``output_stride`` (dilated, as the paper's FCN-D8), fully fine-tuned with
    ordinary BatchNorm (mmsegmentation's FCN uses SyncBN): logits at input size. Normalise inputs with the mean /
    std of ``model.backbone.pretrained_cfg``."""
    extra = {} if family(name) == "cifar_resnet" else {"output_stride": output_stride}
    model = create_model(name, pretrained=pretrained, **extra, **kwargs)
    body = IntermediateLayerGetter(model, {"layer4": "out"})
    body.pretrained_cfg = model.pretrained_cfg
    return FCN(body, FCNHead(model.num_features, num_classes))
