"""ladder-zoo: self-supervised vision backbones (Ladder Siamese Network and baselines), timm-registered.

    >>> import ladder_zoo, torch
    >>> m = ladder_zoo.create_model("ladder_byol_r50", features_only=True)
    >>> [f.shape[1] for f in m(torch.randn(1, 3, 224, 224))]
    [64, 256, 512, 1024, 2048]

Importing the package registers every zoo name with timm, so ``timm.create_model(name)`` works as well.
Its modules import one way, each from those before it only:

    version, errors, device, image_files -> layouts -> weights -> hub -> models -> factory -> publish, integrations
    -> cli

``train/`` (a source checkout's, never installed) imports from the package, never the reverse.
"""
from .errors import UnknownModelError, WeightsError, WeightsIntegrityError, WeightsMismatchError, WeightsNotFoundError
from .factory import create_model, list_models, list_pretrained
from .version import __version__

__all__ = [
    "create_model", "list_models", "list_pretrained",
    "UnknownModelError", "WeightsError", "WeightsIntegrityError", "WeightsMismatchError", "WeightsNotFoundError",
    "__version__",
]
