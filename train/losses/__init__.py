"""One loss per file: the equation in the docstring, shapes in comments."""
from .byol import byol_loss
from .dense import dense_align, dense_loss
from .simsiam import simsiam_loss

__all__ = ["byol_loss", "dense_align", "dense_loss", "simsiam_loss"]
