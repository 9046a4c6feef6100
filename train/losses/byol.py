"""BYOL's loss (Grill et al., 2020, Eq. 2): the squared distance of the normalised vectors,

    L(p, z) = || p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)

with p = q(y_a) the online prediction for view a and z = y'_b the target projection of view b, under
stop-gradient (the caller passes the EMA target's output, computed without grad).
"""
import torch
import torch.nn.functional as F


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # p: [B, D] online prediction, z: [B, D] target projection -> [B], in float32 whatever the autocast dtype
    return 2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1)
