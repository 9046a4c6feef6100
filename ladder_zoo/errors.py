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
