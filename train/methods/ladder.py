"""Ladder Siamese Network (Yoshihashi et al., 2022): self-supervision at every level of the backbone.

    L_all = sum_i w_i L_i(z_i^a, z_i^b),   w_i = 2^(i-N) w for the levels i < N,  w_N = 1        (Eq. 4, 6)
    G level:  y_i = p_i(avgpool(z_i)),  L_i = the base loss with the level's own p_i and q_i         (Eq. 5)
    D level:  L_i = (L_i^global + L_i^dense) / 2, L^dense with 1x1-conv heads, argmax-aligned         (Eq. 7)

over a base method (``byol.py``: EMA target; ``simsiam.py``: stop-gradient). With local or cutout views every
active level runs the multi-task alignment of ``multitask.py`` (one predictor per level and view type). The
intermediate heads are side branches: the backbone's own path is unchanged, and a level that is off costs nothing.

Levels (``method.levels``), for any timm backbone with ``feature_info`` and ``forward_intermediates``:

- the *ladder* of a backbone is its default levels, 4 for every family: the stages after the stem of a ResNet
  (res2..res5), RegNet (s1..s4), ConvNeXt (stages.0..3) and Swin (layers.0..3); for a plain (single-scale) ViT,
  the blocks that end its four depth quarters (ViT-S/16, 12 blocks: blocks.2, .5, .8, .11).
- positional, as the paper writes it: one of G (global), D (dense) or - (off) per ladder level, aligned to the
  last ones: "- - - G" is plain BYOL / SimSiam, "G G G G" Ladder, "D D G G" Ladder-DenseBYOL, "- - - D" DenseBYOL,
  on a ResNet as on a ViT (where "G G G G" means the four quarter depths, not the last four blocks).
- named: ``level:kind`` pairs, a level being its name (res2..res5 on a ResNet, stage<i> otherwise: the i-th
  ``feature_info`` entry), its module (``layer4``, ``stages.3``, ``blocks.8``) or its ``feature_info`` index:
  "res3:G res5:G", "blocks.3:G blocks.11:G". ``ladder`` is G on every ladder level.
  (YAML reads a bare ``- - - G`` as a list: quote it, in a recipe and in a ``method.levels='- - - G'`` override.)

Weights (Eq. 6): i counts steps down the ladder from the backbone's last level N (a named level off the ladder is
a step of its own), so "G G G G" weighs 1/16, 1/8, 1/4, 1 (w = 0.5) on every family, and "res3:G res5:G" gives
res3 the 1/8 it has in "- G - G".

Level features are NCHW maps (ViT and Swin: their token grids, class and register tokens left out, via
``forward_intermediates``), so dense levels align tokens as they align ResNet positions. A global level pools
its map, except the last level, which takes the backbone's own pooled feature, ``forward_head(pre_logits=True)``:
what the released model gives with ``num_classes=0`` (ResNet: the average pool; ViT: the class token after the
final norm, as MULAN's ViT does; ConvNeXt / Swin: pool and final norm).
"""
import copy
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import DropPath

from ..config import MethodConfig
from ladder_zoo.models import level_names, quarter_blocks

from ..heads import mlp
from ..losses import dense_loss
from .byol import BYOL
from .multitask import check_views, task_pairs
from .simsiam import SimSiam

BASES = {"byol": BYOL, "simsiam": SimSiam}
KINDS = ("G", "D", "-")


def _modules(feature_info) -> List[str]:
    return [entry["module"] for entry in feature_info]


def _has_stem(modules: Sequence[str]) -> bool:
    return modules[0] in ("act1", "stem") or modules[0].startswith("stem")


def ladder_levels(feature_info: Sequence[Dict]) -> List[int]:
    """``feature_info`` indices of a backbone's 4 default levels (its ladder): the stages after the stem of a
    hierarchical backbone, or the blocks ending the four depth quarters of a plain ViT (all levels at one stride)."""
    modules = _modules(feature_info)
    levels = list(range(1 if _has_stem(modules) else 0, len(modules)))
    if len({entry["reduction"] for entry in feature_info}) == 1 and len(levels) > 4:  # plain ViT: depth quarters
        levels = [levels[i] for i in quarter_blocks(len(levels))]
    return levels


def parse_levels(spec: str, feature_info: Sequence[Dict]) -> Dict[str, str]:
    """``method.levels`` -> {level name: G or D}, shallow to deep (the module docstring gives the grammar)."""
    names, modules = level_names(feature_info), _modules(feature_info)
    ladder = ladder_levels(feature_info)
    ladder_names = " ".join(names[i] for i in ladder)
    usage = (f"method.levels='{spec}': give one of G / D / - per ladder level ({ladder_names}), e.g. 'G G G G'; or "
             f"level:kind pairs, e.g. '{names[ladder[0]]}:G {names[-1]}:G'; or 'ladder'")
    words = spec.split()
    if words == ["ladder"]:
        chosen = {i: "G" for i in ladder}
    elif words and all(":" in w for w in words):
        chosen = {}
        for word in words:
            level, _, kind = word.rpartition(":")
            if level in names:
                i = names.index(level)
            elif level in modules:
                i = modules.index(level)
            elif level.lstrip("-").isdigit() and -len(names) <= int(level) < len(names):
                i = int(level) % len(names)
            else:
                raise ValueError(f"method.levels='{spec}': no level '{level}' in this backbone; its levels are "
                                 f"{', '.join(names)} (modules {', '.join(modules)}) or their indices 0..{len(names) - 1}")
            if kind not in KINDS or i in chosen:
                raise ValueError(usage + (f" ('{level}' is named twice)" if i in chosen else f" ('{word}')"))
            chosen[i] = kind
    elif words and len(words) <= len(ladder) and set(words) <= set(KINDS):
        chosen = dict(zip(ladder[len(ladder) - len(words):], words))
    else:
        raise ValueError(usage)
    if _has_stem(modules) and chosen.get(0, "-") != "-":
        raise ValueError(f"method.levels='{spec}': the stem ({names[0]}) takes no loss; the levels start after it")
    levels = {names[i]: kind for i, kind in sorted(chosen.items()) if kind != "-"}
    if not levels:
        raise ValueError(f"method.levels='{spec}' switches every loss off")
    return levels


def ladder_weights(levels: Sequence[str], feature_info: Sequence[Dict], w: float) -> Dict[str, float]:
    """Eq. 6 for any number of levels: w_i = 2^(i-N) w, i counting steps down the ladder (the default levels, plus
    any named level off it) from the backbone's last level N, whose weight is 1."""
    names = level_names(feature_info)
    steps = sorted(set(ladder_levels(feature_info)) | {names.index(level) for level in levels})
    top = len(names) - 1
    return {level: 1.0 if names.index(level) == top
            else 2.0 ** (steps.index(names.index(level)) - steps.index(top)) * w for level in levels}


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
        names = level_names(info)
        self.levels: Dict[str, str] = parse_levels(cfg.levels, info)
        index = {name: i for i, name in enumerate(names)}
        self.indices: List[int] = [index[name] for name in self.levels]
        self.level_weights = ladder_weights(self.levels, info, cfg.ladder_w)
        self.top = names[-1] if names[-1] in self.levels else None  # pooled by the backbone's own head
        channels = {name: info[index[name]]["num_chs"] for name in self.levels}
        if self.top:
            channels[self.top] = getattr(backbone, "head_hidden_size", None) or backbone.num_features
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
