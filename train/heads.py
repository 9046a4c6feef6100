"""Projector and predictor heads: MLPs on pooled features, and their 1x1-conv twins on feature maps.

Sized from the backbone's ``feature_info`` (the input width of a level's head is that level's channel count),
never hard-coded.
"""
from typing import List, Sequence

from torch import nn


def mlp(dims: Sequence[int], last_bn: bool = False, conv: bool = False) -> nn.Sequential:
    """``dims[0] -> dims[1] -> ... -> dims[-1]``: (Linear, BN, ReLU) blocks, then a last Linear.

    ``last_bn`` adds a BatchNorm without affine after the last layer (SimSiam's projector). ``conv`` builds the
    same head from 1x1 convolutions and BatchNorm2d, applied at every position of a feature map (DenseBYOL).
    """
    linear = (lambda i, o, bias: nn.Conv2d(i, o, 1, bias=bias)) if conv else nn.Linear
    norm = nn.BatchNorm2d if conv else nn.BatchNorm1d
    layers: List[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [linear(d_in, d_out, False), norm(d_out), nn.ReLU(inplace=True)]
    layers.append(linear(dims[-2], dims[-1], not last_bn))
    if last_bn:
        layers.append(norm(dims[-1], affine=False))
    return nn.Sequential(*layers)
