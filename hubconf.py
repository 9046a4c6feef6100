"""torch.hub entry points: one per ladder-zoo model (``ladder_zoo.models.MODELS``), each ``ladder_zoo.create_model``.

    model = torch.hub.load("path/to/ladder-zoo", "ladder_byol_r50", source="local", pretrained=True, features_only=True)

Every keyword of ``ladder_zoo.create_model`` (features_only, out_indices, output_stride, in_chans, num_classes,
checkpoint_path, revision, ...) passes through.
"""
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]

import ladder_zoo as _zoo  # noqa: E402


def _entry(name):
    def entry(pretrained=False, **kwargs):
        return _zoo.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__, entry.__doc__ = name, getattr(_zoo.models, name).__doc__
    return entry


globals().update({name: _entry(name) for name in _zoo.models.MODELS})
