"""Errors raised by ladder_zoo. Each message names the problem and how to fix it."""


class UnknownModelError(RuntimeError):
    """A model name that neither ladder_zoo nor timm knows (RuntimeError, as timm raises for unknown names)."""


class WeightsError(RuntimeError):
    """Base class of every failure to produce pretrained weights; never silently replaced by random ones."""


class WeightsNotFoundError(WeightsError):
    """No copy of the requested weights is reachable: unpublished tag, offline without cache, missing file."""


class WeightsIntegrityError(WeightsError):
    """A weight file exists but is corrupt, truncated or differs from the released sha256."""


class WeightsMismatchError(WeightsError):
    """A readable weight file whose tensors do not fit the requested architecture."""


def phrased_for(error: WeightsError, no_weights: str, checkpoint: str) -> WeightsError:
    """``error`` as create_model raised it, with its fixes named where the user gives them (a config key, a
    command-line flag) instead of create_model's ``pretrained=False`` and ``checkpoint_path=...``; weights not
    found also say how to go without them."""
    text = str(error).replace("pretrained=False", no_weights).replace("checkpoint_path=...", checkpoint)
    if isinstance(error, WeightsNotFoundError) and no_weights not in text:
        text += f" Without pretrained weights: {no_weights}."
    return type(error)(text)
