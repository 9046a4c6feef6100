"""Which files are images, for every reader of this project: ``ladder-zoo features`` in a folder (Pillow decodes
them), ``train/``'s ImageFolder in a data set (torchvision.io decodes them, Pillow the BMP and TIFF files it does not)
and the GPU draw's count of a data set (``examples/gpu/draw_plan.py``, which loads this file alone: no torch here)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
