"""torch.hub entry points: one plain function per ladder-zoo model, delegating to ``ladder_zoo.create_model``.

    model = torch.hub.load("path/to/ladder-zoo", "ladder_byol_r50", source="local", pretrained=True, features_only=True)

Every keyword of ``ladder_zoo.create_model`` (features_only, out_indices, output_stride, in_chans, num_classes,
checkpoint_path, revision, ...) passes through.
"""
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]

from ladder_zoo import create_model as _create_model


def byol_r50(pretrained=False, **kwargs):
    """ResNet-50, BYOL."""
    return _create_model("byol_r50", pretrained=pretrained, **kwargs)


def ladder_byol_r50(pretrained=False, **kwargs):
    """ResNet-50, Ladder-BYOL (G G G G)."""
    return _create_model("ladder_byol_r50", pretrained=pretrained, **kwargs)


def densebyol_r50(pretrained=False, **kwargs):
    """ResNet-50, DenseBYOL (dense + global loss on res5)."""
    return _create_model("densebyol_r50", pretrained=pretrained, **kwargs)


def ladder_densebyol_r50(pretrained=False, **kwargs):
    """ResNet-50, Ladder-DenseBYOL (D D G G)."""
    return _create_model("ladder_densebyol_r50", pretrained=pretrained, **kwargs)


def simsiam_r50(pretrained=False, **kwargs):
    """ResNet-50, SimSiam."""
    return _create_model("simsiam_r50", pretrained=pretrained, **kwargs)


def ladder_simsiam_r50(pretrained=False, **kwargs):
    """ResNet-50, Ladder-SimSiam."""
    return _create_model("ladder_simsiam_r50", pretrained=pretrained, **kwargs)


def byol_mt_r50(pretrained=False, **kwargs):
    """ResNet-50, multi-task BYOL (one predictor per view type)."""
    return _create_model("byol_mt_r50", pretrained=pretrained, **kwargs)


def ladder_byol_mt_r50(pretrained=False, **kwargs):
    """ResNet-50, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create_model("ladder_byol_mt_r50", pretrained=pretrained, **kwargs)


def byol_r18(pretrained=False, **kwargs):
    """ResNet-18, BYOL."""
    return _create_model("byol_r18", pretrained=pretrained, **kwargs)


def ladder_byol_r18(pretrained=False, **kwargs):
    """ResNet-18, Ladder-BYOL (G G G G)."""
    return _create_model("ladder_byol_r18", pretrained=pretrained, **kwargs)


def densebyol_r18(pretrained=False, **kwargs):
    """ResNet-18, DenseBYOL (dense + global loss on res5)."""
    return _create_model("densebyol_r18", pretrained=pretrained, **kwargs)


def ladder_densebyol_r18(pretrained=False, **kwargs):
    """ResNet-18, Ladder-DenseBYOL (D D G G)."""
    return _create_model("ladder_densebyol_r18", pretrained=pretrained, **kwargs)


def simsiam_r18(pretrained=False, **kwargs):
    """ResNet-18, SimSiam."""
    return _create_model("simsiam_r18", pretrained=pretrained, **kwargs)


def ladder_simsiam_r18(pretrained=False, **kwargs):
    """ResNet-18, Ladder-SimSiam."""
    return _create_model("ladder_simsiam_r18", pretrained=pretrained, **kwargs)


def byol_mt_r18(pretrained=False, **kwargs):
    """ResNet-18, multi-task BYOL (one predictor per view type)."""
    return _create_model("byol_mt_r18", pretrained=pretrained, **kwargs)


def ladder_byol_mt_r18(pretrained=False, **kwargs):
    """ResNet-18, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create_model("ladder_byol_mt_r18", pretrained=pretrained, **kwargs)


def byol_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, BYOL."""
    return _create_model("byol_r18_cifar", pretrained=pretrained, **kwargs)


def ladder_byol_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, Ladder-BYOL (G G G G)."""
    return _create_model("ladder_byol_r18_cifar", pretrained=pretrained, **kwargs)


def densebyol_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, DenseBYOL (dense + global loss on res5)."""
    return _create_model("densebyol_r18_cifar", pretrained=pretrained, **kwargs)


def ladder_densebyol_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, Ladder-DenseBYOL (D D G G)."""
    return _create_model("ladder_densebyol_r18_cifar", pretrained=pretrained, **kwargs)


def simsiam_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, SimSiam."""
    return _create_model("simsiam_r18_cifar", pretrained=pretrained, **kwargs)


def ladder_simsiam_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, Ladder-SimSiam."""
    return _create_model("ladder_simsiam_r18_cifar", pretrained=pretrained, **kwargs)


def byol_mt_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, multi-task BYOL (one predictor per view type)."""
    return _create_model("byol_mt_r18_cifar", pretrained=pretrained, **kwargs)


def ladder_byol_mt_r18_cifar(pretrained=False, **kwargs):
    """ResNet-18 with the CIFAR stem, Ladder-BYOL multi-task (one predictor per level and view type)."""
    return _create_model("ladder_byol_mt_r18_cifar", pretrained=pretrained, **kwargs)


def byol_mt_vit_s16(pretrained=False, **kwargs):
    """ViT-S/16, multi-task BYOL (MULAN's ViT-S run)."""
    return _create_model("byol_mt_vit_s16", pretrained=pretrained, **kwargs)


def ladder_byol_mt_vit_s16(pretrained=False, **kwargs):
    """ViT-S/16, Ladder-BYOL multi-task (blocks 2, 5, 8, 11)."""
    return _create_model("ladder_byol_mt_vit_s16", pretrained=pretrained, **kwargs)


def ladder_byol_swin_t(pretrained=False, **kwargs):
    """Swin-T, Ladder-BYOL (G G G G on its four stages)."""
    return _create_model("ladder_byol_swin_t", pretrained=pretrained, **kwargs)


def ladder_byol_convnext_t(pretrained=False, **kwargs):
    """ConvNeXt-T, Ladder-BYOL (G G G G on its four stages)."""
    return _create_model("ladder_byol_convnext_t", pretrained=pretrained, **kwargs)


def ladder_byol_vit_t4_cifar(pretrained=False, **kwargs):
    """ViT-T with 4 px patches on 32 px images, Ladder-BYOL (blocks 2, 5, 8, 11)."""
    return _create_model("ladder_byol_vit_t4_cifar", pretrained=pretrained, **kwargs)
