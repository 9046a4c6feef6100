"""Multi-task asymmetric Siamese SSL (De Plaen et al., 2026, "MULAN", arXiv:2602.05845): one alignment task
per view type (pfdp0/mulan ``algorithms.py``, ``BYOLMultiTaskAlgorithm`` / ``SimSiamMultiTaskAlgorithm``).

Views (``augmentations.py``, ``TrainTransformMultiTask``): 2 global (scale 0.25-1), 2 local (96 px, scale
0.08-0.25) and 1 cutout view (a global crop with one block, 0.2-0.4 of its area, filled with the mean colour
before the photometric operations). Every task predicts the target's *global* views, through its own predictor
(a single predictor shared by all view types destabilises BYOL and SimSiam):

    L_global = mean_{i != j} L(q_global(y_gi), sg(y'_gj))
    L_local  = mean_{i, j}   L(q_local(y_li),  sg(y'_gj))
    L_cutout = mean_{i, j}   L(q_cutout(y_ci), sg(y'_gj))
    L = w_global L_global + w_local L_local + w_cutout L_cutout        (weights 1, 1, 1 for BYOL; 1/3 for SimSiam)

with L the base loss of one pair (BYOL 2 - 2 cos, SimSiam -cos): a plain mean over (view, target) pairs, as
MULAN's code computes it. (Two global views alone keep the base method's own symmetrised loss, which for BYOL
sums its two directions.) ``ladder.py`` applies the tasks at every active level.
"""
from typing import Dict, List, Tuple

VIEW_TYPES = ("global", "local", "cutout")


def task_pairs(view_type: str, counts: Dict[str, int]) -> List[Tuple[int, int]]:
    """(online view index of ``view_type``, target global view index) pairs of a task."""
    n_global = counts["global"]
    if view_type == "global":
        return [(i, j) for i in range(n_global) for j in range(n_global) if i != j]
    return [(i, j) for i in range(counts[view_type]) for j in range(n_global)]


def check_views(counts: Dict[str, int]) -> None:
    unknown = set(counts) - set(VIEW_TYPES)
    if unknown or counts.get("global", 0) < 2:
        raise ValueError(f"method.views={counts}: view types are {VIEW_TYPES}, with at least 2 global views")
