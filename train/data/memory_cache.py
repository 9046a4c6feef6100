"""The in-memory sets (``data.in_memory``, e.g. CIFAR-10) decoded once: the uint8 tensor of the whole set (with
labels, names and unreadable images) is written under ``$LADDER_ZOO_CACHE`` (default
``~/.cache/ladder_zoo/decoded``), keyed by the sha256 of the archive and the split, and read back by every
later run instead of decoding 50k JPEGs again.

Only sets read from an archive file are cached (a folder has no single content hash); the file is written
atomically (temporary file, fsync, rename), so a killed run never leaves a half-written cache.
"""
import os
from pathlib import Path
from typing import Callable, List, Tuple

import torch

from ladder_zoo.hub import sha256_file

from .imagefolder import ImageFolder

FORMAT = "ladder_zoo.decoded_set/1"


def cache_dir() -> Path:
    return Path(os.environ.get("LADDER_ZOO_CACHE", Path.home() / ".cache" / "ladder_zoo" / "decoded"))


def cache_path(images: ImageFolder) -> Path:
    split = images.split.replace("/", "_") or "_"
    return cache_dir() / f"{sha256_file(images.path)}-{split}.pt"


def decoded_set(images: ImageFolder, decode: Callable[[], Tuple[torch.Tensor, List[str]]]
                ) -> Tuple[torch.Tensor, List[str]]:
    """(uint8 [N, 3, H, W], names of the unreadable images) of ``images``: from the cache when the archive's
    content was decoded before, else ``decode()``'s, then cached."""
    if not images.path.is_file():
        return decode()
    path = cache_path(images)
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # unreadable (e.g. another torch's format): decode again and overwrite
            state = None
        if state and state.get("format") == FORMAT and state["names"] == images.names:
            return state["images"], list(state["bad_images"])
    tensor, bad = decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "images": tensor, "labels": images.labels, "names": images.names,
                    "bad_images": bad}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return tensor, bad
