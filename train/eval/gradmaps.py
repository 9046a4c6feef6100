"""Per-level gradient maps (the paper's Fig. 4): for a few images, dL_i / dz_low for every level loss L_i above
the lowest backbone level z_low (res2 of a ResNet), summed in absolute value over channels. L_low itself is left
out: its global pooling spreads a spatially uniform gradient. Needs a train/ checkpoint (heads and target)."""
from typing import Dict

import torch

from ladder_zoo.models import level_names

from ..checkpoint import SSLCheckpoint
from ..config import config_from_dict
from ..data.gpu_augment import augment_view
from ..data.views import view_specs
from ..model import build_model


def gradient_maps(ckpt: SSLCheckpoint, images: torch.Tensor, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """{level: [n, H_low, W_low]} gradient magnitude maps for uint8 images [n, 3, H, W], in the model's
    training mode (batch statistics, as during pretraining)."""
    cfg = config_from_dict(ckpt.config)
    model = build_model(cfg)
    model.load_state_dict(ckpt.model)
    model = model.to(device).train()
    low = model.backbone.feature_info[1]["module"]  # the first level after the stem
    captured = []

    def keep_first(module, inputs, output):
        if not captured and torch.is_grad_enabled():
            output.retain_grad()
            captured.append(output)

    hook = model.backbone.get_submodule(low).register_forward_hook(keep_first)
    try:
        specs = view_specs(cfg.data, {"global": 2})
        images = images.to(device)
        views = [augment_view(images, s, cfg.data, torch.Generator(device).manual_seed(seed + v))
                 for v, s in enumerate(specs)]
        out = model({"global": views})
    finally:
        hook.remove()
    low_level = level_names(model.backbone.feature_info)[1]
    maps = {}
    for level in model.levels:
        if level.name != low_level:  # L_low's pooling gives z_low a spatially uniform gradient
            (grad,) = torch.autograd.grad(out[f"loss/{level.name}"], captured[0], retain_graph=True)
            maps[level.name] = grad.abs().sum(1).detach().cpu()
    return maps
