"""Ladder Siamese Network (Yoshihashi et al., 2022): self-supervision at every level of the backbone.

    L_all = sum_i w_i L_i(z_i^a, z_i^b),   w_i = 2^(i-N) w for the levels i < N,  w_N = 1        (Eq. 4, 6)
    G level:  y_i = p_i(avgpool(z_i)),  L_i = the base loss with the level's own p_i and q_i         (Eq. 5)
    D level:  L_i = (L_i^global + L_i^dense) / 2, L^dense with 1x1-conv heads, argmax-aligned         (Eq. 7)

over a base method (``byol.py``: EMA target; ``simsiam.py``: stop-gradient). ``levels`` gives the loss of each
backbone level after the stem, in the paper's notation: "- - - G" is plain BYOL / SimSiam, "G G G G" Ladder,
"D D G G" Ladder-DenseBYOL, "- - - D" DenseBYOL. With local or cutout views every active level runs the
multi-task alignment of ``multitask.py`` (one predictor per level and view type). The intermediate heads are
side branches: the backbone's own path is unchanged, and a level that is off costs nothing.
"""
import copy
from typing import Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ladder_zoo.models import level_names

from ..heads import mlp
from ..losses import dense_loss
from .byol import BYOL
from .multitask import check_views, task_pairs
from .simsiam import SimSiam

BASES = {"byol": BYOL, "simsiam": SimSiam}


class Embedding(NamedTuple):
    y: torch.Tensor  # [B, D] projection of the pooled level features
    dense: Optional[torch.Tensor]  # [B, C, H, W] dense projection (D levels only)


class LadderSiamese(nn.Module):
    """The whole Siamese model: online backbone and heads, target branch, per-level losses.

    ``backbone`` is a timm model with ``feature_info`` and ``forward_intermediates`` (num_classes=0): its state
    dict is the zoo model's, under ``backbone.``; the EMA target's is under ``target_backbone.``.
    """

    def __init__(self, backbone: nn.Module, cfg: MethodConfig):
        super().__init__()
        if cfg.base not in BASES:
            raise ValueError(f"method.base='{cfg.base}': choose one of {', '.join(BASES)}")
        self.base = BASES[cfg.base](cfg)
        if not cfg.stop_gradient and self.base.uses_target_network:
            raise ValueError("method.stop_gradient=false is SimSiam's collapse ablation; BYOL's EMA target has no grad")
        check_views(cfg.views)
        self.views = dict(cfg.views)
        # Two global views alone: the base method's symmetrised loss (BYOL sums its two directions). Multi-task
        # (MULAN, algorithms.py): every task is the plain mean over its (view, target) pairs, weighted.
        multitask = set(self.views) != {"global"}
        self.pair_scale = 1.0 if multitask else self.base.pair_scale
        weights = cfg.task_weights or {t: self.base.task_weight if multitask else 1.0 for t in self.views}
        missing = set(self.views) - set(weights)
        if missing:
            raise ValueError(f"method.task_weights={weights} has no weight for view type(s) {sorted(missing)}: give "
                             f"one per view type in method.views, or leave task_weights unset for MULAN's")
        self.task_weights = {t: weights[t] for t in self.views}
        self.stop_gradient = cfg.stop_gradient
        self.block_elements = cfg.dense_block_elements

        info = backbone.feature_info
        names, kinds = level_names(info), cfg.levels.split()
        first = len(info) - len(kinds)
        if first < 0 or names[first] == "stem" or set(kinds) - {"G", "D", "-"}:
            raise ValueError(
                f"method.levels='{cfg.levels}': one of G / D / - per level of {', '.join(n for n in names if n != 'stem')}"
            )
        self.levels: Dict[str, str] = {names[first + k]: kind for k, kind in enumerate(kinds) if kind != "-"}
        if not self.levels:
            raise ValueError(f"method.levels='{cfg.levels}' switches every loss off")
        index = {name: i for i, name in enumerate(names)}
        self.indices: List[int] = [index[name] for name in self.levels]
        top = len(names) - 1  # N: the last level
        self.level_weights = {name: 1.0 if index[name] == top else 2.0 ** (index[name] - top) * cfg.ladder_w
                              for name in self.levels}
        channels = {name: info[index[name]]["num_chs"] for name in self.levels}
        predictor_keys = list(self.views) if cfg.per_view_predictor else ["shared"]
        dense = [name for name, kind in self.levels.items() if kind == "D"]

        self.backbone = backbone
        self.projectors = nn.ModuleDict({name: self.base.projector(channels[name]) for name in self.levels})
        self.predictors = nn.ModuleDict({
            name: nn.ModuleDict({k: self.base.predictor() for k in predictor_keys}) for name in self.levels
        })
        self.dense_projectors = nn.ModuleDict({
            name: mlp([channels[name], cfg.dense_hidden, cfg.dense_out], conv=True) for name in dense
        })
        self.dense_predictors = nn.ModuleDict({
            name: nn.ModuleDict({k: mlp([cfg.dense_out, cfg.dense_hidden, cfg.dense_out], conv=True)
                                 for k in predictor_keys}) for name in dense
        })
        if self.base.uses_target_network:
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projectors = copy.deepcopy(self.projectors).requires_grad_(False)
            self.target_dense_projectors = copy.deepcopy(self.dense_projectors).requires_grad_(False)

    def forward(self, views: Dict[str, List[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """``views``: view type -> list of [B, 3, H, W] batches. Returns ``loss`` (to backpropagate) and, per
        level, its loss ``loss/<level>`` and the collapse monitor ``std/<level>`` (std over the batch of the
        normalised projections: about 1/sqrt(D) when healthy, 0 when collapsed)."""
        losses, online = self.level_losses(views)
        out: Dict[str, torch.Tensor] = {}
        for level, loss in losses.items():
            out[f"loss/{level}"] = loss.detach()
            out[f"std/{level}"] = F.normalize(online["global"][0][level].y.detach().float(), dim=1).std(0).mean()
        out["loss"] = sum(self.level_weights[level] * loss for level, loss in losses.items())
        return out

    def level_losses(self, views: Dict[str, List[torch.Tensor]]):
        """L_i of every active level (with their graph), and the online embeddings they came from."""
        counts = {t: len(xs) for t, xs in views.items()}
        online = {t: [self._embed(self.backbone, self.projectors, self.dense_projectors, x) for x in xs]
                  for t, xs in views.items()}
        targets = self._targets(views["global"], online["global"])
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

    def _embed(self, backbone: nn.Module, projectors: nn.ModuleDict, dense_projectors: nn.ModuleDict,
               x: torch.Tensor) -> Dict[str, Embedding]:
        features = backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        return {
            level: Embedding(projectors[level](z.mean((2, 3))), dense_projectors[level](z) if level in dense_projectors else None)
            for level, z in zip(self.levels, features)
        }

    def _targets(self, global_views: List[torch.Tensor], online_global: List[Dict[str, Embedding]]):
        if self.base.uses_target_network:
            with torch.no_grad():
                return [self._embed(self.target_backbone, self.target_projectors, self.target_dense_projectors, x)
                        for x in global_views]
        if not self.stop_gradient:
            return online_global
        return [{level: Embedding(e.y.detach(), None if e.dense is None else e.dense.detach())
                 for level, e in embeddings.items()} for embeddings in online_global]

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA step of the target branch: theta' <- tau theta' + (1 - tau) theta (BYOL; a no-op for SimSiam)."""
        if not self.base.uses_target_network:
            return
        online = [*self.backbone.parameters(), *self.projectors.parameters(), *self.dense_projectors.parameters()]
        target = [*self.target_backbone.parameters(), *self.target_projectors.parameters(),
                  *self.target_dense_projectors.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - tau)

    def predictor_parameters(self) -> List[nn.Parameter]:
        return [*self.predictors.parameters(), *self.dense_predictors.parameters()]
