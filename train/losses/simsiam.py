"""SimSiam's loss (Chen & He, 2021, Eq. 1): the negative cosine similarity,

    D(p, z) = - p / ||p|| . z / ||z||

with p = h(f(x_a)) the prediction for view a and z = f(x_b) the projection of view b, stop-gradient applied by
the caller (``z.detach()``): that stop-gradient is what keeps SimSiam from collapsing.
"""
import torch
import torch.nn.functional as F


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # p: [B, D] prediction, z: [B, D] projection -> [B], in float32 whatever the autocast dtype
    return -F.cosine_similarity(p.float(), z.float(), dim=-1)
