"""Projection and prediction heads, one class per role (as lightly's ``heads.py``): MLPs on pooled features, and
their 1x1-conv twins on feature maps (dense levels).

Each is an ``nn.Sequential`` of (Linear, BN, ReLU) blocks and a last Linear; its input width is the channel count
of the level it sits on (``feature_info``), its other sizes the base method's (``model.py``: ``BYOL.head_sizes``,
``SimSiam.head_sizes``) unless ``method.*`` sets them:

    BYOLProjectionHead     d -> hidden -> out               (Linear BN ReLU Linear; more layers: more hidden blocks)
    BYOLPredictionHead     out -> hidden -> out
    SimSiamProjectionHead  d -> hidden -> hidden -> out     (BN after every layer, the last one without affine)
    SimSiamPredictionHead  out -> hidden -> out             (a bottleneck: hidden < out)
    DenseProjectionHead    C -> hidden -> out               (1x1 convolutions and BatchNorm2d at every position)
    DensePredictionHead    out -> hidden -> out
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
    def __init__(self, in_dim: int, hidden: int, out: int, layers: int):
        super().__init__(*mlp([in_dim, *[hidden] * (layers - 1), out]))


class BYOLPredictionHead(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(*mlp([dim, hidden, dim]))


class SimSiamProjectionHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out: int, layers: int):
        super().__init__(*mlp([in_dim, *[hidden] * (layers - 1), out], last_bn=True))


class SimSiamPredictionHead(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(*mlp([dim, hidden, dim]))


class DenseProjectionHead(nn.Sequential):
    def __init__(self, in_channels: int, hidden: int, out: int):
        super().__init__(*mlp([in_channels, hidden, out], conv=True))


class DensePredictionHead(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(*mlp([dim, hidden, dim], conv=True))
