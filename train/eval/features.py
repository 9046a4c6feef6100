"""Backbones from any source, and their pooled features at every level for a whole image set."""
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

import ladder_zoo
from ladder_zoo.models import level_names
from ladder_zoo.weights import config_name

from ..checkpoint import SSLCheckpoint, load_ssl_checkpoint
from ..data import ImageFolder, usable_workers


def backbone_from(source: str) -> Tuple[nn.Module, str, dict]:
    """(plain backbone, its name, what is known of its training) from a train/ checkpoint, a Hub-layout folder
    (config.json) or a zoo name with a published tag."""
    path = Path(source)
    if path.is_file():
        ckpt = load_ssl_checkpoint(path)
        return ckpt.create_backbone(), ckpt.model_name, {"step": ckpt.step, "epochs": ckpt.epoch,
                                                         "recipe": ckpt.config["name"], "config": ckpt.config,
                                                         "checkpoint": ckpt}
    if path.is_dir():
        config = json.loads((path / "config.json").read_text())
        name = config_name(config)
        return ladder_zoo.create_model(name, checkpoint_path=path), name, dict(config.get("ladder_zoo", {}))
    return ladder_zoo.create_model(source, pretrained=True), source.split(".")[0], {"tag": source}


def eval_transform(model: nn.Module) -> v2.Compose:
    """timm's eval preprocessing from the weights' pretrained_cfg: resize to size / crop_pct, centre crop, normalise."""
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    return v2.Compose([
        v2.Resize(int(size / cfg.get("crop_pct", 1.0)), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(cfg["mean"], cfg["std"]),
    ])


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, images: ImageFolder, indices: List[int], transform):
        self.images, self.indices, self.transform = images, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        _, image = self.images.decode(self.indices[i], lambda name, e: None)
        return self.transform(image)


def levels_of(model: nn.Module) -> List[str]:
    return level_names(model.feature_info)


@torch.no_grad()
def pooled_features(model: nn.Module, images: ImageFolder, indices: List[int], device: torch.device,
                    batch_size: int = 256, workers: int = 4, desc: str = "features") -> Dict[str, torch.Tensor]:
    """{level: float32 [N, C]} global-average-pooled features of every level, in ``indices`` order."""
    loader = torch.utils.data.DataLoader(_Decoded(images, indices, eval_transform(model)), batch_size=batch_size,
                                         num_workers=usable_workers(workers))
    model = model.eval().to(device)
    names = levels_of(model)
    out: Dict[str, List[torch.Tensor]] = {n: [] for n in names}
    with tqdm(total=len(indices), desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr) as bar:
        for x in loader:
            for n, z in zip(names, model.forward_intermediates(x.to(device), intermediates_only=True)):
                out[n].append(z.float().mean((2, 3)).cpu())
            bar.update(len(x))
    return {n: torch.cat(v) for n, v in out.items()}


def across_classes(labels: torch.Tensor, indices: List[int], n: int, seed: int = 0) -> List[int]:
    """``n`` of ``indices`` taken round-robin over the classes, each class's members in a seeded order: the first
    images shown (Fig. 3 and 4) are of different classes, not the first class of an archive sorted by class."""
    g = torch.Generator().manual_seed(seed)
    indices = torch.as_tensor(indices)
    per_class = [members[torch.randperm(len(members), generator=g)]
                 for members in (indices[labels[indices] == c] for c in labels[indices].unique())]
    depth = max(len(m) for m in per_class)
    order = [int(m[i]) for i in range(depth) for m in per_class if i < len(m)]
    return order[:n]


def class_balanced(labels: torch.Tensor, per_class: int, seed: int = 0) -> List[int]:
    """Indices of at most ``per_class`` images of each class, drawn with a fixed seed (all when per_class <= 0)."""
    if per_class <= 0:
        return list(range(len(labels)))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        picked += members[torch.randperm(len(members), generator=g)[:per_class]].tolist()
    return sorted(picked)


__all__ = ["SSLCheckpoint", "across_classes", "class_balanced", "eval_transform", "levels_of", "backbone_from", "pooled_features"]
