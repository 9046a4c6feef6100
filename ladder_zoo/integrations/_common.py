"""What every detection and segmentation adapter needs: frozen BatchNorm, frozen stages, feature names / channels /
strides read off ``feature_info``, the pixel statistics of the weights' ``pretrained_cfg``, which names a framework
can take (the CIFAR stem, dilation), and what ``ladder-zoo info`` says of each integration."""
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..factory import create_model
from ..models import ARCHS, FAMILIES, LEVELS, MODELS, level_names

STAGE_MODULES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))  # stem, res2..res5
DILATABLE = ("resnet", "convnext")  # the families whose timm class dilates its last stages (output_stride 8 / 16)


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d replaced by torchvision's FrozenBatchNorm2d holding the same statistics and affine."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, frozen_batchnorm(child))
    return module


def level_modules(model: nn.Module) -> Sequence[Tuple[str, ...]]:
    """The modules of each level, stem first: a ResNet's ``STAGE_MODULES``; a hierarchical timm backbone's stem
    (``stem`` / ``patch_embed``), then its ``feature_info`` stages (Swin, ConvNeXt: 5 levels as for a ResNet)."""
    info = getattr(model.feature_info, "info", model.feature_info)  # a features_only wrapper's FeatureInfo, or a list
    if level_names(info) == list(LEVELS):
        return STAGE_MODULES
    return [tuple(c for c in ("stem", "patch_embed") if hasattr(model, c)), *[(i["module"],) for i in info]]


def freeze_levels(model: nn.Module, levels: int, eval_mode: bool = False) -> None:
    """Stop gradients to the first ``levels`` levels (0 none, 1 the stem, 2 stem and res2, ... 5 all), and with
    ``eval_mode`` put them in eval mode too (mmdet's ``frozen_stages``)."""
    names = dict(model.named_modules())
    for modules in level_modules(model)[:levels]:
        for name in modules:
            if name in names:
                names[name].requires_grad_(False)
                if eval_mode:
                    names[name].eval()


def feature_specs(model: nn.Module) -> List[Tuple[str, int, int]]:
    """(level name, channels, stride) of each output of a ``features_only`` zoo model."""
    info = model.feature_info
    names = level_names(info.info)
    return [(names[i], c, r) for i, c, r in zip(info.out_indices, info.channels(), info.reduction())]


def pixel_stats(model: nn.Module, scale: float = 255.0) -> Dict[str, List[float]]:
    """Mean and std the weights expect, RGB, on the 0..``scale`` pixel range detection frameworks feed."""
    cfg = model.pretrained_cfg
    return {"mean": [round(m * scale, 4) for m in cfg["mean"]], "std": [round(s * scale, 4) for s in cfg["std"]]}


def family(name: str) -> str:
    """The ``models.FAMILIES`` row of a zoo name (with or without tag); "" for a name outside the zoo."""
    model = MODELS.get(name.split(".")[0])
    return ARCHS[model.arch].family if model else ""


def refuse_cifar_stem(name: str) -> None:
    """Detection backbones need an ImageNet stem: a CIFAR-stem ResNet (32 px weights, res2..res5 at strides 1..8)
    under an 800 px detector runs its FPN at stride 1, silently and for minutes per image."""
    if family(name) == "cifar_resnet":
        raise ValueError(
            f"{name} has the CIFAR stem (weights trained on 32 px images, res2..res5 at strides 1..8): a detector's "
            "800 px inputs would put its FPN at stride 1. Use an ImageNet-stem name (r18 / r50: strides 4..32)."
        )


def check_output_stride(name: str, output_stride: int) -> None:
    """A one-line ValueError where ``output_stride`` 8 or 16 (the last stages dilated, as mmseg's FCN-D8) cannot
    apply to the zoo name ``name``: the CIFAR stem, and the ViT / Swin, which timm cannot dilate."""
    if output_stride == 32 or not family(name):  # 32: no dilation; a plain timm name is timm's to check
        return
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride={output_stride}: use 8 (FCN-D8), 16, or 32 (no dilation).")
    if family(name) == "cifar_resnet":
        raise ValueError(
            f"{name} has the CIFAR stem (weights trained on 32 px images, res5 already at stride 8 of them): "
            f"output_stride={output_stride} (FCN-D8's dilation) is for ImageNet-stem names: r18, r50, convnext_t."
        )
    if family(name) not in DILATABLE:
        network = ARCHS[MODELS[name.split(".")[0]].arch].network
        raise ValueError(
            f"{name} is a {network}, which has no dilated form (timm's ViT and Swin take no output_stride): "
            f"output_stride={output_stride} (FCN-D8) needs a ResNet or ConvNeXt name: r18, r50, convnext_t."
        )


def integrations(name: str) -> List[Tuple[str, str]]:
    """(framework, what it takes of the zoo name ``name``) for mmseg, transformers and ONNX: ``ladder-zoo info``;
    none for a name outside the zoo."""
    if not family(name):
        return []
    arch = ARCHS[MODELS[name.split(".")[0]].arch]
    height, width = arch.data["input_size"][1:]
    fixed = FAMILIES[arch.family].cfg.get("fixed_input_size")
    if arch.family in DILATABLE:
        mmseg = "LadderZooBackbone, FCN-D8 (output_stride=8): configs/mmseg/"
    elif arch.family == "cifar_resnet":
        mmseg = "no: the CIFAR stem (32 px weights, res5 already at stride 8) under 512 px crops"
    else:
        mmseg = f"no: fixed {height} x {width} input (mmseg crops 512 / 769 px), no dilated form for FCN-D8"
    transformers = "AutoModel.from_pretrained(Hub folder)" + (
        f", timm's {arch.timm}" if arch.timm else " after `import ladder_zoo` (zoo-only network)")
    onnx = "ladder-zoo export-onnx, dynamic batch, " + (
        f"--size {height} {width} only (fixed input size)" if fixed else "any --size")
    return [("mmseg", mmseg), ("transformers", transformers), ("ONNX", onnx)]


def model_to_convert(name: str, checkpoint: Optional[str] = None, revision: Optional[str] = None) -> nn.Module:
    """The zoo model whose weights a converter writes: the tag's pretrained weights, or ``checkpoint``'s.
    Only ImageNet-stem ResNets convert: detectron2's and mmdet's ResNet cannot hold a CIFAR stem or a transformer."""
    if family(name) == "cifar_resnet":
        raise ValueError(
            f"{name} has the CIFAR stem (3x3 stride-1 conv1, no max-pool), which detectron2's and mmdet's ResNet "
            "cannot hold; convert an r18 / r50 name, or use the ladder_zoo backbone adapters directly."
        )
    if family(name) != "resnet":
        raise ValueError(f"{name} is not a ResNet: detectron2's and mmdet's ResNet cannot hold it; convert an r18 / "
                         "r50 name, or use the ladder_zoo backbone adapters directly.")
    return create_model(name, pretrained=checkpoint is None, checkpoint_path=checkpoint, revision=revision)


def resnet_depth(model: nn.Module) -> int:
    """18, 34, 50, 101 ...: the depth of a timm ResNet, counted from its blocks."""
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return len(blocks) * (3 if hasattr(blocks[0], "conv3") else 2) + 2
