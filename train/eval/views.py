"""View-to-view distance per stage (the paper's Fig. 3): for each image, two views drawn with the recipe's
training augmentation; the Euclidean distance between their global-average-pooled features at every level,
after L2 normalisation so that levels and models are on one scale (0: identical direction, 2: opposite)."""
from typing import Dict, List, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DataConfig
from ..data.gpu_augment import augment_view
from ..data.views import view_specs
from .features import levels_of


@torch.no_grad()
def view_distances(model: nn.Module, images: Union[torch.Tensor, List[torch.Tensor]], data: DataConfig,
                   device: torch.device, seed: int = 0, batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """{level: [N] distances} for uint8 images ([N, 3, H, W], or a list of [3, Hi, Wi])."""
    model = model.eval().to(device)
    specs = view_specs(data, {"global": 2})
    names = levels_of(model)
    out: Dict[str, List[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        batch = batch.to(device) if isinstance(batch, torch.Tensor) else [im.to(device) for im in batch]
        pooled = []
        for v, spec in enumerate(specs):
            generator = torch.Generator(device).manual_seed(seed * 1000 + start * 2 + v)
            feats = model.forward_intermediates(augment_view(batch, spec, data, generator), intermediates_only=True)
            pooled.append([F.normalize(z.float().mean((2, 3)), dim=1) for z in feats])
        for name, a, b in zip(names, *pooled):
            out[name].append((a - b).norm(dim=1).cpu())
    return {n: torch.cat(v) for n, v in out.items()}
