"""BYOL (Grill et al., 2020): the base objective with a momentum (EMA) target network.

    online:  y = p(f(x)),  prediction q(y)       p: Linear(d, 4096) BN ReLU Linear(4096, 256)
                                                  q: Linear(256, 4096) BN ReLU Linear(4096, 256)
    target:  y' = p'(f'(x)), (f', p') an exponential moving average of (f, p); no predictor
    loss:    L = L(q(y_a), sg(y'_b)) + L(q(y_b), sg(y'_a)),   L(p, z) = 2 - 2 cos(p, z)   (losses/byol.py)
    EMA:     theta' <- tau theta' + (1 - tau) theta,  tau_k = 1 - (1 - tau_0)(cos(pi k / K) + 1) / 2

``ladder.py`` applies it at one or several levels; this class only says what BYOL's heads, target and loss are.
"""
import math

from ..config import MethodConfig
from ..heads import mlp
from ..losses import byol_loss


class BYOL:
    uses_target_network = True  # an EMA copy of backbone and projectors gives the targets
    pair_scale = 2.0  # the symmetrised loss sums its two directions: 2 x the mean over view pairs
    task_weight = 1.0  # multi-task: MULAN's BYOL command, --task-weights 1.0 1.0 1.0
    loss = staticmethod(byol_loss)

    def __init__(self, cfg: MethodConfig):
        self.proj_hidden = cfg.proj_hidden or 4096
        self.proj_out = cfg.proj_out or 256
        self.pred_hidden = cfg.pred_hidden or 4096
        self.proj_layers = cfg.proj_layers or 2  # MULAN's ViT runs: 3 (--projector-mlp 4096-4096-256)

    def projector(self, in_dim: int):
        return mlp([in_dim, *[self.proj_hidden] * (self.proj_layers - 1), self.proj_out])

    def predictor(self):
        return mlp([self.proj_out, self.pred_hidden, self.proj_out])


def ema_tau(step: int, total_steps: int, tau0: float) -> float:
    """BYOL's cosine EMA schedule, from tau0 at step 0 to 1 at the last step."""
    return 1 - (1 - tau0) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2
