"""The Siamese model: a base method (BYOL or SimSiam) at one or several levels of a backbone (the Ladder
Siamese Network, Yoshihashi et al., 2022), with the multi-task views of MULAN (De Plaen et al., 2026).

    online:   z_i = level i of f(x) (NCHW map),  y_i = p_i(pool(z_i)),  prediction q_i(y_i)
    target:   BYOL:    y'_i from (f', p'_i), an EMA of (f, p_i)  (update_target; tau in schedules.py)
              SimSiam: y'_i = sg(y_i), the online projection under stop-gradient
    level:    G: L_i = mean over pairs (a, b) of L(q_i(y_i^a), y'_i^b)                                   (Eq. 5)
              D: L_i = (L_i^global + L_i^dense) / 2, dense heads at every position, argmax-aligned     (Eq. 7)
    total:    L_all = sum_i w_i L_i,  w_i = 2^(i-N) w below the last level N, w_N = 1                (Eq. 4, 6)

with L the base method's pair loss (``losses/``: BYOL 2 - 2 cos, SimSiam -cos). Two global views alone give the
base method's own symmetrised loss (BYOL sums its two directions, SimSiam averages them). With local or cutout
views, every view type is a task of its own (pfdp0/mulan ``algorithms.py``): its own predictor, predicting the
target's *global* views, a plain mean over its (view, target) pairs, weighted:

    L_global = mean_{i != j} L(q_global(y_gi), y'_gj),   L_local = mean_{i, j} L(q_local(y_li), y'_gj),
    L_cutout = mean_{i, j} L(q_cutout(y_ci), y'_gj),     L = sum_t w_t L_t   (w 1 each for BYOL, 1/3 for SimSiam)

The intermediate heads are side branches: the backbone's own path is unchanged, a level that is off costs
nothing, and the backbone's state dict is the zoo model's (under ``backbone.``; the EMA target's under
``target_backbone.``). Which levels, and their weights: ``levels.py``. A global level pools its map, except the
last level, which takes the backbone's own pooled feature, ``forward_head(pre_logits=True)``: what the released
model gives with ``num_classes=0`` (ResNet: the average pool; ViT: the class token after the final norm, as
MULAN's ViT; ConvNeXt / Swin: pool and final norm).
"""
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

import ladder_zoo
from ladder_zoo.models import MODELS, level_names

from .config import Config, MethodConfig
from .heads import (BYOLPredictionHead, BYOLProjectionHead, DensePredictionHead, DenseProjectionHead,
                    SimSiamPredictionHead, SimSiamProjectionHead)
from .levels import ladder_weights, parse_levels
from .losses import byol_loss, dense_loss, simsiam_loss

VIEW_TYPES = ("global", "local", "cutout")


@dataclass(frozen=True)
class Base:
    """What a base method is: its heads (and their default sizes), its target branch and its pair loss."""

    projection: Callable[..., nn.Module]
    prediction: Callable[..., nn.Module]
    sizes: Dict[str, int]  # proj_hidden, proj_out, pred_hidden, proj_layers when the recipe leaves them unset
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ema_target: bool  # an EMA copy of backbone and projectors gives the targets; else the online ones, detached
    pair_scale: float  # two global views: BYOL sums its two directions (2 x the mean), SimSiam averages them
    task_weight: float  # multi-task: MULAN's --task-weights


BASES: Dict[str, Base] = {
    "byol": Base(BYOLProjectionHead, BYOLPredictionHead, dict(proj_hidden=4096, proj_out=256, pred_hidden=4096,
                 proj_layers=2), byol_loss, ema_target=True, pair_scale=2.0, task_weight=1.0),
    "simsiam": Base(SimSiamProjectionHead, SimSiamPredictionHead, dict(proj_hidden=2048, proj_out=2048,
                    pred_hidden=512, proj_layers=3), simsiam_loss, ema_target=False, pair_scale=1.0, task_weight=1 / 3),
}


def task_pairs(view_type: str, counts: Dict[str, int]) -> List[Tuple[int, int]]:
    """(online view index of ``view_type``, target global view index) pairs of a task."""
    n_global = counts["global"]
    if view_type == "global":
        return [(i, j) for i in range(n_global) for j in range(n_global) if i != j]
    return [(i, j) for i in range(counts[view_type]) for j in range(n_global)]


class Embedding(NamedTuple):
    y: torch.Tensor  # [B, D] projection of the pooled level features
    dense: Optional[torch.Tensor]  # [B, C, H, W] dense projection (D levels only)


class LadderSiamese(nn.Module):
    """The whole Siamese model: online backbone and heads, target branch, per-level losses.

    ``backbone`` is a timm model with ``feature_info`` and ``forward_intermediates`` (num_classes=0).
    """

    def __init__(self, backbone: nn.Module, cfg: MethodConfig):
        super().__init__()
        if cfg.base not in BASES:
            raise ValueError(f"method.base='{cfg.base}': choose one of {', '.join(BASES)}")
        self.base = base = BASES[cfg.base]
        if not cfg.stop_gradient and base.ema_target:
            raise ValueError("method.stop_gradient=false is SimSiam's collapse ablation; BYOL's EMA target has no grad")
        unknown = set(cfg.views) - set(VIEW_TYPES)
        if unknown or cfg.views.get("global", 0) < 2:
            raise ValueError(f"method.views={cfg.views}: view types are {VIEW_TYPES}, with at least 2 global views")
        self.views = dict(cfg.views)
        multitask = set(self.views) != {"global"}
        self.pair_scale = 1.0 if multitask else base.pair_scale
        weights = cfg.task_weights or {t: base.task_weight if multitask else 1.0 for t in self.views}
        missing = set(self.views) - set(weights)
        if missing:
            raise ValueError(f"method.task_weights={weights} has no weight for view type(s) {sorted(missing)}: give "
                             f"one per view type in method.views, or leave task_weights unset for MULAN's")
        self.task_weights = {t: weights[t] for t in self.views}
        self.stop_gradient = cfg.stop_gradient
        self.block_elements = cfg.dense_block_elements

        info = backbone.feature_info
        names = level_names(info)
        self.levels: Dict[str, str] = parse_levels(cfg.levels, info)  # {level: G or D}, shallow to deep
        index = {name: i for i, name in enumerate(names)}
        self.indices: List[int] = [index[name] for name in self.levels]
        self.level_weights = ladder_weights(self.levels, info, cfg.ladder_w)
        self.top = names[-1] if names[-1] in self.levels else None  # pooled by the backbone's own head
        channels = {name: info[index[name]]["num_chs"] for name in self.levels}
        if self.top:
            channels[self.top] = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        predictor_keys = list(self.views) if cfg.per_view_predictor else ["shared"]
        dense = [name for name, kind in self.levels.items() if kind == "D"]
        size = {k: getattr(cfg, k) or v for k, v in base.sizes.items()}

        self.backbone = backbone
        self.projectors = nn.ModuleDict({
            name: base.projection(channels[name], size["proj_hidden"], size["proj_out"], size["proj_layers"])
            for name in self.levels})
        self.predictors = nn.ModuleDict({
            name: nn.ModuleDict({k: base.prediction(size["proj_out"], size["pred_hidden"]) for k in predictor_keys})
            for name in self.levels})
        self.dense_projectors = nn.ModuleDict({
            name: DenseProjectionHead(channels[name], cfg.dense_hidden, cfg.dense_out) for name in dense})
        self.dense_predictors = nn.ModuleDict({
            name: nn.ModuleDict({k: DensePredictionHead(cfg.dense_out, cfg.dense_hidden) for k in predictor_keys})
            for name in dense})
        if base.ema_target:
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            for module in self.target_backbone.modules():  # stochastic depth on the online network only (MULAN,
                if isinstance(module, DropPath):            # models.py get_backbone; MoBY's target_drop_path_rate 0)
                    module.drop_prob = 0.0
            self.target_projectors = copy.deepcopy(self.projectors).requires_grad_(False)
            self.target_dense_projectors = copy.deepcopy(self.dense_projectors).requires_grad_(False)

    def forward(self, views: Dict[str, List[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """``views``: view type -> list of [B, 3, H, W] batches. Returns ``loss`` (to backpropagate) and, per
        level, its loss ``loss/<level>`` and the collapse monitor ``std/<level>`` (std over the batch of the
        normalised projections: about 1/sqrt(D) when healthy, 0 when collapsed)."""
        losses, online = self.level_losses(views)
        out: Dict[str, torch.Tensor] = {"loss": sum(self.level_weights[level] * loss for level, loss in losses.items())}
        for level, loss in losses.items():
            # with its graph, not .detach()ed: compiled (torch 2.14), a one-level "loss" (1.0 x L) beside a
            # detached L came out of the graph without grad_fn. Whoever logs it detaches it (RunLog.accumulate).
            out[f"loss/{level}"] = loss
            out[f"std/{level}"] = F.normalize(online["global"][0][level].y.detach().float(), dim=1).std(0).mean()
        return out

    def level_losses(self, views: Dict[str, List[torch.Tensor]]):
        """L_i of every active level (with their graph), and the online embeddings they came from."""
        counts = {t: len(xs) for t, xs in views.items()}
        online = {t: [self.embed(self.backbone, self.projectors, self.dense_projectors, x) for x in xs]
                  for t, xs in views.items()}
        targets = self.targets(views["global"], online["global"])
        losses: Dict[str, torch.Tensor] = {}
        for level, kind in self.levels.items():
            level_loss = 0.0
            for view_type, embeddings in online.items():
                key = view_type if view_type in self.predictors[level] else "shared"
                pairs = task_pairs(view_type, counts)
                predictions = [self.predictors[level][key](e[level].y) for e in embeddings]
                task = sum(self.base.loss(predictions[i], targets[j][level].y).mean() for i, j in pairs) / len(pairs)
                if kind == "D":
                    dense_predictions = [self.dense_predictors[level][key](e[level].dense) for e in embeddings]
                    task_dense = sum(
                        dense_loss(dense_predictions[i], embeddings[i][level].dense, targets[j][level].dense,
                                   self.base.loss, self.block_elements).mean()
                        for i, j in pairs
                    ) / len(pairs)
                    task = (task + task_dense) / 2
                level_loss = level_loss + self.task_weights[view_type] * self.pair_scale * task
            losses[level] = level_loss
        return losses, online

    def embed(self, backbone: nn.Module, projectors: nn.ModuleDict, dense_projectors: nn.ModuleDict,
              x: torch.Tensor) -> Dict[str, Embedding]:
        """The projections (and dense projections) of every active level of ``backbone`` for images ``x``."""
        if self.top:
            final, features = backbone.forward_intermediates(x, indices=self.indices)
        else:
            features = backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        pooled = {level: backbone.forward_head(final, pre_logits=True) if level == self.top else z.mean((2, 3))
                  for level, z in zip(self.levels, features)}
        return {
            level: Embedding(projectors[level](pooled[level]),
                             dense_projectors[level](z) if level in dense_projectors else None)
            for level, z in zip(self.levels, features)
        }

    def targets(self, global_views: List[torch.Tensor], online_global: List[Dict[str, Embedding]]):
        """The targets of the global views: the EMA network's projections (BYOL), or the online ones under
        stop-gradient (SimSiam; without it, ``method.stop_gradient=false``, the collapse ablation)."""
        if self.base.ema_target:
            with torch.no_grad():
                return [self.embed(self.target_backbone, self.target_projectors, self.target_dense_projectors, x)
                        for x in global_views]
        if not self.stop_gradient:
            return online_global
        return [{level: Embedding(e.y.detach(), None if e.dense is None else e.dense.detach())
                 for level, e in embeddings.items()} for embeddings in online_global]

    @torch.no_grad()
    def update_target(self, tau) -> None:
        """EMA step of the target branch: theta' <- tau theta' + (1 - tau) theta (BYOL; a no-op for SimSiam)."""
        if not self.base.ema_target:
            return
        online = [*self.backbone.parameters(), *self.projectors.parameters(), *self.dense_projectors.parameters()]
        target = [*self.target_backbone.parameters(), *self.target_projectors.parameters(),
                  *self.target_dense_projectors.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - tau)

    def predictor_parameters(self) -> List[nn.Parameter]:
        return [*self.predictors.parameters(), *self.dense_predictors.parameters()]


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
    return LadderSiamese(build_backbone(cfg.model, **cfg.model_kwargs), cfg.method)
