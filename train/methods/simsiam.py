"""SimSiam (Chen & He, 2021): the base objective without a momentum encoder.

    projector f: Linear(d, 2048) BN ReLU Linear(2048, 2048) BN ReLU Linear(2048, 2048) BN   (BN on every layer)
    predictor h: Linear(2048, 512) BN ReLU Linear(512, 2048)                                 (bottleneck)
    loss:        L = 1/2 D(h(z_a), sg(z_b)) + 1/2 D(h(z_b), sg(z_a)),  D(p, z) = -cos(p, z)  (losses/simsiam.py)

The target branch is the same network under stop-gradient (``sg``): removing it collapses the outputs to a
constant (``method.stop_gradient=false`` reproduces that). Trained with SGD, lr 0.05 x batch / 256, weight decay
1e-4, the predictor at a fixed lr (``optim.fixed_predictor_lr``).
"""
from ..config import MethodConfig
from ..heads import mlp
from ..losses import simsiam_loss


class SimSiam:
    uses_target_network = False  # targets are the online projections, detached
    pair_scale = 1.0  # the symmetrised loss averages its two directions
    task_weight = 1 / 3  # multi-task: MULAN's SimSiam command, --task-weights 0.333 0.333 0.333
    loss = staticmethod(simsiam_loss)

    def __init__(self, cfg: MethodConfig):
        self.proj_hidden = cfg.proj_hidden or 2048
        self.proj_out = cfg.proj_out or 2048
        self.pred_hidden = cfg.pred_hidden or 512
        self.proj_layers = cfg.proj_layers or 3

    def projector(self, in_dim: int):
        return mlp([in_dim, *[self.proj_hidden] * (self.proj_layers - 1), self.proj_out], last_bn=True)

    def predictor(self):
        return mlp([self.proj_out, self.pred_hidden, self.proj_out])
