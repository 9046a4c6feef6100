"""Pretraining, evaluation and export of the zoo's weights (a source checkout's, not the installed package's).

``train.load_ssl_checkpoint`` reads a run's checkpoint (backbone, heads, EMA target, optimizer, RNG, data
position) to continue, evaluate or export it (``train.checkpoint``, imported on first use).
"""
__all__ = ["SSLCheckpoint", "load_ssl_checkpoint"]


def __getattr__(name: str):
    if name in __all__:
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'train' has no attribute '{name}'")
