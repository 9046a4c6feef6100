"""DenseBYOL (Ladder Siamese Network, Eq. 7): a non-contrastive DenseCL with argmax alignment,

    y^k = p_conv(z^k)                                                   (1x1-conv projector, k = a, b)
    align(y^b; y^a)[i, j] = y^b[u*, v*],  (u*, v*) = argmax_{u,v} cos(y^a[i, j], y^b[u, v])
    L_dense = mean_{i,j} L(q_conv(y^a)[i, j], align(y^b; y^a)[i, j])

with L the base method's pair loss (BYOL: || norm(.) - norm(.) ||^2 = 2 - 2 cos) and y^b from the target
branch. The argmax is not differentiable, so the alignment is computed without grad, in blocks: never a full
[B, HaWa, HbWb] float32 similarity (at res2 of a 224 px ResNet-50 that is about 10 GB per 256 images).
"""
from typing import Callable

import torch
import torch.nn.functional as F


@torch.no_grad()
def dense_align(y_a: torch.Tensor, y_b: torch.Tensor, block_elements: int = 1 << 26) -> torch.Tensor:
    """For every position of y_a, the index of the most cosine-similar position of y_b.

    y_a: [B, C, Ha, Wa], y_b: [B, C, Hb, Wb] -> [B, Ha*Wa] indices into Hb*Wb. At most ``block_elements``
    similarities exist at once (a block of samples, or of query rows of one sample).
    """
    a = F.normalize(y_a.flatten(2).float(), dim=1).transpose(1, 2)  # [B, Na, C]
    b = F.normalize(y_b.flatten(2).float(), dim=1)  # [B, C, Nb]
    batch, n_a, n_b = a.shape[0], a.shape[1], b.shape[2]
    index = torch.empty(batch, n_a, dtype=torch.long, device=a.device)
    samples = max(1, block_elements // (n_a * n_b))
    rows = n_a if samples > 1 else max(1, block_elements // n_b)
    for s in range(0, batch, samples):
        for r in range(0, n_a, rows):
            index[s:s + samples, r:r + rows] = torch.bmm(a[s:s + samples, r:r + rows], b[s:s + samples]).argmax(-1)
    return index


def dense_loss(
    q_a: torch.Tensor,
    y_a: torch.Tensor,
    y_b: torch.Tensor,
    pair_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    block_elements: int = 1 << 26,
) -> torch.Tensor:
    """L_dense per sample.

    q_a: [B, C, Ha, Wa] online dense prediction; y_a: [B, C, Ha, Wa] online dense projection (decides the
    alignment); y_b: [B, C, Hb, Wb] target dense projection -> [B], the mean over the Ha*Wa positions.
    """
    batch, channels = q_a.shape[:2]
    index = dense_align(y_a, y_b, block_elements)  # [B, Na]
    aligned = torch.gather(y_b.flatten(2), 2, index.unsqueeze(1).expand(-1, channels, -1))  # [B, C, Na]
    per_position = pair_loss(
        q_a.flatten(2).transpose(1, 2).reshape(-1, channels),  # [B*Na, C]
        aligned.transpose(1, 2).reshape(-1, channels),  # [B*Na, C]
    )
    return per_position.view(batch, -1).mean(1)
