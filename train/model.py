"""The Siamese model: a base method, BYOL or SimSiam, at one or several levels of a backbone (the Ladder Siamese
Network, Yoshihashi et al., 2022), on the multi-task views of MULAN (De Plaen et al., 2026).

Plain BYOL and plain SimSiam are the classes ``BYOL`` and ``SimSiam`` below on one level (``- - - G``) with two
global views: online, y = g(pool(f(x))) and the prediction q(y); each base method adds its target branch y' and its
pair loss, summed or averaged over the two directions:

    BYOL:     y' = g'(pool(f'(x))), (f', g') an EMA of (f, g);   loss = L(q(y_1), y'_2) + L(q(y_2), y'_1),
              L(p, z) = 2 - 2 cos(p, z)
    SimSiam:  y' = sg(y), the online projection under stop-gradient;   loss = (D(q(y_1), y'_2) + D(q(y_2), y'_1)) / 2,
              D(p, z) = -cos(p, z)

``LadderSiamese`` computes that loss at every active level, each with heads of its own (``levels.py``: which
levels, and their weights), and for every view type:

    level:    G: L_i = the base's loss on that level's features;  D: L_i = (L_i^global + L_i^dense) / 2, 1x1-conv
              heads at every position, argmax-aligned                                                    (Eq. 7)
    total:    L = sum_i w_i L_i,  w_i = 2^(i-N) w below the last level N, w_N = 1                      (Eq. 4, 6)
    views:    each view type t is a task (pfdp0/mulan ``algorithms.py``): its own predictor q_t predicts the target's
              *global* views, a plain mean over its (view, target) pairs, weighted:
              L_i = sum_t w_t mean_{(a, b)} L(q_t(y_a), y'_b),  (a, b): every local / cutout view a with every
              global view b; for the global task, every ordered pair of two different global views

Two global views alone are one task, w_global the base's own symmetrisation (``two_view_weight``: BYOL sums its
two pairs, SimSiam averages them); with local or cutout views, w_t is MULAN's task weight (``task_weight``).

The intermediate heads are side branches: the backbone's own path is unchanged, a level that is off costs nothing,
and the backbone's state dict is the zoo model's (under ``backbone.``; the EMA target's under ``target_backbone.``).
A level pools its map, except the backbone's last level, which takes the backbone's own pooled feature,
``forward_head(pre_logits=True)``: what the released model gives with ``num_classes=0`` (ResNet: the average pool;
ViT: the class token after the final norm, as MULAN's ViT; ConvNeXt / Swin: pool and final norm).
"""
import copy
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

import ladder_zoo
from ladder_zoo.models import MODELS

from .config import Config, MethodConfig
from .heads import (BYOLPredictionHead, BYOLProjectionHead, DensePredictionHead, DenseProjectionHead,
                    SimSiamPredictionHead, SimSiamProjectionHead)
from .levels import Level, active_levels
from .losses import byol_loss, dense_loss, simsiam_loss

VIEW_TYPES = ("global", "local", "cutout")


class Embedding(NamedTuple):
    y: torch.Tensor  # [B, D] projection of the pooled level features
    dense: Optional[torch.Tensor]  # [B, C, H, W] dense projection (D levels only)


def task_pairs(view_type: str, n_views: int, n_global: int) -> List[Tuple[int, int]]:
    """(online view of ``view_type``, target global view) index pairs of a task."""
    return [(a, b) for a in range(n_views) for b in range(n_global) if view_type != "global" or a != b]


class LadderSiamese(nn.Module):
    """A base method (``BYOL``, ``SimSiam``: the subclasses below say what it is) at every active level of a
    backbone, for every view type. ``backbone``: a timm model with ``feature_info`` and ``forward_intermediates``
    (num_classes=0); ``build_siamese`` picks the subclass ``cfg.base`` names."""

    projection_head: Callable[..., nn.Module]
    prediction_head: Callable[..., nn.Module]
    head_sizes: Dict[str, int]  # proj_hidden, proj_out, pred_hidden, proj_layers when the config leaves them unset
    pair_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # [B, D] prediction, [B, D] target -> [B]
    two_view_weight: float  # two global views alone: the weight of the mean over their two pairs
    task_weight: float  # with local / cutout views: each view type's (MULAN's --task-weights)

    def __init__(self, backbone: nn.Module, cfg: MethodConfig):
        super().__init__()
        unknown = set(cfg.views) - set(VIEW_TYPES)
        if unknown or cfg.views.get("global", 0) < 2:
            raise ValueError(f"method.views={cfg.views}: view types are {VIEW_TYPES}, with at least 2 global views")
        self.task_weights = self._task_weights(cfg)  # view type -> w_t
        self.predictor_of = {t: t if cfg.per_view_predictor else "shared" for t in cfg.views}  # view type -> its q
        self.levels: List[Level] = active_levels(cfg.levels, backbone.feature_info, cfg.ladder_w)
        self.block_elements = cfg.dense_block_elements

        top = self.levels[-1]  # if it is the backbone's last level, it takes the backbone's own pooled feature
        self.head_pooled = top.name if top.index == len(backbone.feature_info) - 1 else None
        channels = {level.name: backbone.feature_info[level.index]["num_chs"] for level in self.levels}
        if self.head_pooled:
            channels[top.name] = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        size = {k: getattr(cfg, k) or v for k, v in self.head_sizes.items()}
        predictors = list(dict.fromkeys(self.predictor_of.values()))
        dense = [level.name for level in self.levels if level.kind == "D"]

        self.backbone = backbone
        self.projectors = nn.ModuleDict({
            name: self.projection_head(c, size["proj_hidden"], size["proj_out"], size["proj_layers"])
            for name, c in channels.items()})
        self.predictors = nn.ModuleDict({
            name: nn.ModuleDict({q: self.prediction_head(size["proj_out"], size["pred_hidden"]) for q in predictors})
            for name in channels})
        self.dense_projectors = nn.ModuleDict({
            name: DenseProjectionHead(channels[name], cfg.dense_hidden, cfg.dense_out) for name in dense})
        self.dense_predictors = nn.ModuleDict({
            name: nn.ModuleDict({q: DensePredictionHead(cfg.dense_out, cfg.dense_hidden) for q in predictors})
            for name in dense})

    def _task_weights(self, cfg: MethodConfig) -> Dict[str, float]:
        multitask = set(cfg.views) != {"global"}
        weights = cfg.task_weights or {t: self.task_weight if multitask else 1.0 for t in cfg.views}
        missing = set(cfg.views) - set(weights)
        if missing:
            raise ValueError(f"method.task_weights={weights} has no weight for view type(s) {sorted(missing)}: give "
                             f"one per view type in method.views, or leave task_weights unset for MULAN's")
        return {t: weights[t] * (1.0 if multitask else self.two_view_weight) for t in cfg.views}

    def forward(self, views: Dict[str, List[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """``views``: view type -> list of [B, 3, H, W] batches. Returns ``loss`` (to backpropagate) and, per
        level, its loss ``loss/<level>`` and the collapse monitor ``std/<level>`` (std over the batch of the
        normalised projections: about 1/sqrt(D) when healthy, 0 when collapsed)."""
        online = {t: [self.embed(x) for x in xs] for t, xs in views.items()}  # per view: y (and dense) per level
        targets = self.targets(views["global"], online["global"])  # y' of the global views, what every task predicts
        losses = {level.name: sum(self.task_weights[t] * self.task_loss(level, t, embeddings, targets)
                                  for t, embeddings in online.items()) for level in self.levels}
        out: Dict[str, torch.Tensor] = {"loss": sum(level.weight * losses[level.name] for level in self.levels)}
        for name, loss in losses.items():
            # with its graph, not .detach()ed: compiled (torch 2.14), a one-level "loss" (1.0 x L) beside a
            # detached L came out of the graph without grad_fn. Whoever logs it detaches it (RunLog.accumulate).
            out[f"loss/{name}"] = loss
            out[f"std/{name}"] = F.normalize(online["global"][0][name].y.detach().float(), dim=1).std(0).mean()
        return out

    def task_loss(self, level: Level, view_type: str, online: List[Dict[str, Embedding]],
                  targets: List[Dict[str, Embedding]]) -> torch.Tensor:
        """One view type's task at one level: the mean of L(q(y_a), y'_b) over its pairs (a, b); on a D level, the
        mean of it and of the dense loss over the same pairs (Eq. 7)."""
        q = self.predictor_of[view_type]
        y, y_target = [e[level.name] for e in online], [e[level.name] for e in targets]
        pairs = task_pairs(view_type, len(y), len(y_target))
        predictions = [self.predictors[level.name][q](e.y) for e in y]
        loss = sum(self.pair_loss(predictions[a], y_target[b].y).mean() for a, b in pairs) / len(pairs)
        if level.kind == "D":
            dense_predictions = [self.dense_predictors[level.name][q](e.dense) for e in y]
            dense = sum(dense_loss(dense_predictions[a], y[a].dense, y_target[b].dense, self.pair_loss,
                                   self.block_elements).mean() for a, b in pairs) / len(pairs)
            loss = (loss + dense) / 2
        return loss

    def embed(self, x: torch.Tensor, target: bool = False) -> Dict[str, Embedding]:
        """The projections (and dense projections) of every active level for images ``x``: of the online network,
        or (``target=True``, BYOL) of its EMA copy."""
        backbone, projectors, dense_projectors = (
            (self.target_backbone, self.target_projectors, self.target_dense_projectors) if target
            else (self.backbone, self.projectors, self.dense_projectors))
        indices = [level.index for level in self.levels]
        if self.head_pooled:
            final, features = backbone.forward_intermediates(x, indices=indices)
        else:
            features = backbone.forward_intermediates(x, indices=indices, intermediates_only=True)
        names = [level.name for level in self.levels]
        pooled = [backbone.forward_head(final, pre_logits=True) if name == self.head_pooled else z.mean((2, 3))
                  for name, z in zip(names, features)]
        return {name: Embedding(projectors[name](p), dense_projectors[name](z) if name in dense_projectors else None)
                for name, p, z in zip(names, pooled, features)}

    def targets(self, global_views: List[torch.Tensor], online: List[Dict[str, Embedding]]):
        """y' of the global views (the base method's target branch)."""
        raise NotImplementedError

    def update_target(self, tau) -> None:
        """The target branch's step after the optimizer's (BYOL's EMA; nothing for SimSiam)."""

    def predictor_parameters(self) -> List[nn.Parameter]:
        return [*self.predictors.parameters(), *self.dense_predictors.parameters()]


class BYOL(LadderSiamese):
    """BYOL (Grill et al., 2020): the target branch is an exponential moving average of the online backbone and
    projectors, (f', g') <- tau (f', g') + (1 - tau) (f, g) after every step (tau from ``schedules.ema_tau``); the
    loss L(q(y_a), y'_b) = 2 - 2 cos (``losses/byol.py``), summed over both directions."""

    projection_head, prediction_head = BYOLProjectionHead, BYOLPredictionHead
    head_sizes = dict(proj_hidden=4096, proj_out=256, pred_hidden=4096, proj_layers=2)  # its paper's Sec. 3.3
    pair_loss = staticmethod(byol_loss)
    two_view_weight = 2.0  # L(q(y_1), y'_2) + L(q(y_2), y'_1): twice the mean over the two pairs
    task_weight = 1.0  # MULAN's BYOL command: --task-weights 1 1 1

    def __init__(self, backbone: nn.Module, cfg: MethodConfig):
        if not cfg.stop_gradient:
            raise ValueError("method.stop_gradient=false is SimSiam's collapse ablation; BYOL's EMA target has no grad")
        super().__init__(backbone, cfg)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        for module in self.target_backbone.modules():  # stochastic depth on the online network only (MULAN,
            if isinstance(module, DropPath):            # models.py get_backbone; MoBY's target_drop_path_rate 0)
                module.drop_prob = 0.0
        self.target_projectors = copy.deepcopy(self.projectors).requires_grad_(False)
        self.target_dense_projectors = copy.deepcopy(self.dense_projectors).requires_grad_(False)

    def targets(self, global_views: List[torch.Tensor], online: List[Dict[str, Embedding]]):
        """The EMA network's projections of the global views, without grad."""
        with torch.no_grad():
            return [self.embed(x, target=True) for x in global_views]

    @torch.no_grad()
    def update_target(self, tau) -> None:
        """theta' <- tau theta' + (1 - tau) theta, for the backbone and the projectors."""
        online = [*self.backbone.parameters(), *self.projectors.parameters(), *self.dense_projectors.parameters()]
        target = [*self.target_backbone.parameters(), *self.target_projectors.parameters(),
                  *self.target_dense_projectors.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - tau)


class SimSiam(LadderSiamese):
    """SimSiam (Chen & He, 2021): no target network; the target is the online projection under stop-gradient, the
    loss D(q(y_a), sg(y_b)) = -cos (``losses/simsiam.py``), averaged over both directions."""

    projection_head, prediction_head = SimSiamProjectionHead, SimSiamPredictionHead
    head_sizes = dict(proj_hidden=2048, proj_out=2048, pred_hidden=512, proj_layers=3)  # main_simsiam.py, builder.py
    pair_loss = staticmethod(simsiam_loss)
    two_view_weight = 1.0  # (D(q(y_1), sg(y_2)) + D(q(y_2), sg(y_1))) / 2: the mean over the two pairs
    task_weight = 1 / 3  # MULAN's SimSiam command: --task-weights 0.333 0.333 0.333

    def __init__(self, backbone: nn.Module, cfg: MethodConfig):
        super().__init__(backbone, cfg)
        self.stop_gradient = cfg.stop_gradient

    def targets(self, global_views: List[torch.Tensor], online: List[Dict[str, Embedding]]):
        """The online projections of the global views under stop-gradient (``method.stop_gradient=false``, the
        collapse ablation: with their gradient)."""
        if not self.stop_gradient:
            return online
        return [{name: Embedding(e.y.detach(), None if e.dense is None else e.dense.detach())
                 for name, e in embeddings.items()} for embeddings in online]


BASES = {"byol": BYOL, "simsiam": SimSiam}  # method.base -> its model


def build_siamese(backbone: nn.Module, cfg: MethodConfig) -> LadderSiamese:
    """The Siamese model of ``cfg.base`` on ``backbone``."""
    if cfg.base not in BASES:
        raise ValueError(f"method.base='{cfg.base}': choose one of {', '.join(BASES)}")
    return BASES[cfg.base](backbone, cfg)


def build_backbone(name: str, **kwargs) -> nn.Module:
    """The zoo model ``name`` (exactly what ``ladder_zoo.create_model`` gives and export writes back), or any
    timm model with ``feature_info`` and ``forward_intermediates``; no classifier. ``kwargs`` (``model_kwargs``)
    go to timm, e.g. ``drop_path_rate`` or ``dynamic_img_size`` (a ViT taking local crops of another size)."""
    if name in MODELS:
        return ladder_zoo.create_model(name, num_classes=0, **kwargs)
    model = timm.create_model(name, num_classes=0, **kwargs)
    if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
        raise ValueError(f"model={name}: the backbone needs timm's feature_info and forward_intermediates")
    return model


def build_model(cfg: Config) -> LadderSiamese:
    return build_siamese(build_backbone(cfg.model, **cfg.model_kwargs), cfg.method)
