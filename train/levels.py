"""The ladder's levels: which levels of a backbone carry a loss, of which kind, and with which weight (Eq. 6).

Levels (``method.levels``), for any timm backbone with ``feature_info`` and ``forward_intermediates``:

- the *ladder* of a backbone is its default levels, 4 for every family: the stages after the stem of a ResNet
  (res2..res5), RegNet (s1..s4), ConvNeXt (stages.0..3) and Swin (layers.0..3); for a plain (single-scale) ViT,
  the blocks that end its four depth quarters (ViT-S/16, 12 blocks: blocks.2, .5, .8, .11).
- positional, as the paper writes it (and ``ladder_zoo.models.METHODS`` each method): one of G (global), D (dense)
  or - (off) per ladder level, aligned to the last ones: "- - - G" one global loss on the last level, "D D G G"
  dense losses on the first two, on a ResNet as on a ViT (where "G G G G" means the four quarter depths, not the
  last four blocks).
- named: ``level:kind`` pairs, a level being its name (res2..res5 on a ResNet, stage<i> otherwise: the i-th
  ``feature_info`` entry), its module (``layer4``, ``stages.3``, ``blocks.8``) or its ``feature_info`` index:
  "res3:G res5:G", "blocks.3:G blocks.11:G". ``ladder`` is G on every ladder level.
  (YAML reads a bare ``- - - G`` as a list: quote it, in a recipe and in a ``method.levels='- - - G'`` override.)

Weights (Eq. 6): i counts steps down the ladder from the backbone's last level N (a named level off the ladder is
a step of its own), so "G G G G" weighs 1/16, 1/8, 1/4, 1 (w = 0.5) on every family, and "res3:G res5:G" gives
res3 the 1/8 it has in "- G - G".
"""
from typing import Dict, List, NamedTuple, Sequence

from ladder_zoo.models import level_names, quarter_blocks

KINDS = ("G", "D", "-")


class Level(NamedTuple):
    """One level that carries a loss."""

    name: str  # res2..res5 on a ResNet, stage<i> otherwise (ladder_zoo.models.level_names)
    index: int  # its feature_info index: what forward_intermediates counts
    kind: str  # G: the global loss; D: the global and the dense loss, averaged (Eq. 7)
    weight: float  # w_i of Eq. 6


def active_levels(spec: str, feature_info: Sequence[Dict], w: float) -> List[Level]:
    """The levels ``spec`` (``method.levels``) switches on, shallow to deep, with their kinds and Eq. 6 weights."""
    kinds = _kinds(spec, feature_info)
    names, top = level_names(feature_info), len(feature_info) - 1
    # Eq. 6 for any number of levels: w_i = 2^(i-N) w, i counting steps down the ladder (its indices, plus any named
    # level off it) from the backbone's last level N, whose weight is 1
    steps = sorted(set(ladder_indices(feature_info)) | set(kinds))
    return [Level(names[i], i, kind, 1.0 if i == top else 2.0 ** (steps.index(i) - steps.index(top)) * w)
            for i, kind in kinds.items()]


def _modules(feature_info) -> List[str]:
    return [entry["module"] for entry in feature_info]


def _has_stem(modules: Sequence[str]) -> bool:
    return modules[0] in ("act1", "stem") or modules[0].startswith("stem")


def ladder_indices(feature_info: Sequence[Dict]) -> List[int]:
    """``feature_info`` indices of a backbone's 4 default levels (its ladder): the stages after the stem of a
    hierarchical backbone, or the blocks ending the four depth quarters of a plain ViT (all levels at one stride)."""
    modules = _modules(feature_info)
    indices = list(range(1 if _has_stem(modules) else 0, len(modules)))
    if len({entry["reduction"] for entry in feature_info}) == 1 and len(indices) > 4:  # plain ViT: depth quarters
        indices = [indices[i] for i in quarter_blocks(len(indices))]
    return indices


def _kinds(spec: str, feature_info: Sequence[Dict]) -> Dict[int, str]:
    """``method.levels`` -> {feature_info index: G or D}, shallow to deep (the module docstring gives the grammar)."""
    names, modules = level_names(feature_info), _modules(feature_info)
    ladder = ladder_indices(feature_info)
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
    kinds = {i: kind for i, kind in sorted(chosen.items()) if kind != "-"}
    if not kinds:
        raise ValueError(f"method.levels='{spec}' switches every loss off")
    return kinds
