"""Projection and prediction heads, one class per role (as lightly's ``heads.py``): MLPs on pooled features, and
their 1x1-conv twins on feature maps (dense levels).

Each is an ``nn.Sequential`` of (Linear, BN, ReLU) blocks and a last Linear, sized from the level it sits on (its
input width is that level's channel count in ``feature_info``), never hard-coded:

    BYOLProjectionHead     d -> 4096 -> 256            (Linear BN ReLU Linear; MULAN's ViT runs: 3 layers)
    BYOLPredictionHead     256 -> 4096 -> 256
    SimSiamProjectionHead  d -> 2048 -> 2048 -> 2048   (BN after every layer, the last one without affine)
    SimSiamPredictionHead  2048 -> 512 -> 2048         (a bottleneck)
    DenseProjectionHead    C -> 512 -> 128             (1x1 convolutions and BatchNorm2d at every position)
    DensePredictionHead    128 -> 512 -> 128
"""
from typing import List, Sequence

from torch import nn


def mlp(dims: Sequence[int], last_bn: bool = False, conv: bool = False) -> List[nn.Module]:
    """The layers of ``dims[0] -> dims[1] -> ... -> dims[-1]``: (Linear, BN, ReLU) blocks, then a last Linear;
    ``last_bn`` adds a BatchNorm without affine after it; ``conv`` makes them 1x1 convolutions and BatchNorm2d."""
    linear = (lambda i, o, bias: nn.Conv2d(i, o, 1, bias=bias)) if conv else nn.Linear
    norm = nn.BatchNorm2d if conv else nn.BatchNorm1d
    layers: List[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [linear(d_in, d_out, False), norm(d_out), nn.ReLU(inplace=True)]
    layers.append(linear(dims[-2], dims[-1], not last_bn))
    if last_bn:
        layers.append(norm(dims[-1], affine=False))
    return layers


class BYOLProjectionHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int = 4096, out: int = 256, layers: int = 2):
        super().__init__(*mlp([in_dim, *[hidden] * (layers - 1), out]))


class BYOLPredictionHead(nn.Sequential):
    def __init__(self, dim: int = 256, hidden: int = 4096):
        super().__init__(*mlp([dim, hidden, dim]))


class SimSiamProjectionHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int = 2048, out: int = 2048, layers: int = 3):
        super().__init__(*mlp([in_dim, *[hidden] * (layers - 1), out], last_bn=True))


class SimSiamPredictionHead(nn.Sequential):
    def __init__(self, dim: int = 2048, hidden: int = 512):
        super().__init__(*mlp([dim, hidden, dim]))


class DenseProjectionHead(nn.Sequential):
    def __init__(self, in_channels: int, hidden: int = 512, out: int = 128):
        super().__init__(*mlp([in_channels, hidden, out], conv=True))


class DensePredictionHead(nn.Sequential):
    def __init__(self, dim: int = 128, hidden: int = 512):
        super().__init__(*mlp([dim, hidden, dim], conv=True))
