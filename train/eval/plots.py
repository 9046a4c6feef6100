"""Figures: view distances per stage (violins, Fig. 3), gradient maps (Fig. 4), per-stage accuracy summary."""
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_view_distances(distances: Dict[str, Dict[str, torch.Tensor]], out: Path) -> Path:
    """distances: {model label: {level: [N]}}; one violin per model at each level."""
    labels = list(distances)
    levels = [lv for lv in next(iter(distances.values())) if lv != "stem"]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.8 * len(levels) + 2, 3.6))
    for k, label in enumerate(labels):
        positions = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(levels))]
        parts = ax.violinplot([distances[label][lv].numpy() for lv in levels], positions=positions, widths=width,
                              showmedians=True)
        for body in parts["bodies"]:
            body.set_facecolor(f"C{k}")
            body.set_alpha(0.6)
        ax.plot([], [], color=f"C{k}", linewidth=6, label=label)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel("distance between two views\n(L2-normalised pooled features)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_gradient_maps(images: torch.Tensor, maps: Dict[str, torch.Tensor], out: Path, title: str = "") -> Path:
    """images: uint8 [n, 3, H, W]; maps: {level: [n, h, w]} -> one row per image."""
    n, levels = len(images), list(maps)
    fig, axes = plt.subplots(n, len(levels) + 1, figsize=(1.6 * (len(levels) + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i][0].imshow(images[i].permute(1, 2, 0).numpy())
        for j, level in enumerate(levels):
            axes[i][j + 1].imshow(maps[level][i].numpy(), cmap="inferno")
            if i == 0:
                axes[0][j + 1].set_title(f"|dL_{level}/dz|", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def plot_summary(evaluations: List[dict], out: Path) -> Path:
    """Per-stage kNN and linear accuracy, one line per evaluated model."""
    metrics = [m for m in ("knn", "linear") if any(m in e for e in evaluations)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, e in enumerate(evaluations):
            if metric in e:
                levels = list(e[metric]["accuracy"])
                ax.plot(levels, [100 * e[metric]["accuracy"][lv] for lv in levels], "o-", color=f"C{k}", label=e["label"])
        ax.set_title(f"{metric} accuracy per stage (%)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return _save(fig, out)


def summary_table(evaluations: List[dict]) -> str:
    """Markdown table: one row per model and metric, the images its figures come from, one column per stage;
    a note under it when a row comes from a ``--per-class`` subset."""
    levels = list(next(e[m]["accuracy"] for e in evaluations for m in ("knn", "linear") if m in e))
    rows = ["| model | metric | train / test images | " + " | ".join(levels) + " |",
            "|---|---|---|" + "---|" * len(levels)]
    for e in evaluations:
        images = " / ".join(f"{e[n]:,}" if isinstance(e.get(n), int) else "?" for n in ("n_train", "n_test")) + (
            f" ({e['per_class']} per class)" if e.get("per_class") else "")
        for metric in ("knn", "linear"):
            if metric in e:
                acc = e[metric]["accuracy"]
                rows.append(f"| {e['label']} | {metric} | {images} | "
                            + " | ".join(f"{100 * acc[lv]:.1f}" for lv in levels) + " |")
    if any(e.get("per_class") for e in evaluations):
        rows += ["", "Top-1 %. Rows on a class-balanced subset (--per-class) compare runs with each other, not with "
                 "figures on the whole splits (README.md, MODEL_CARD.md): fewer neighbours and training images "
                 "lower them."]
    return "\n".join(rows) + "\n"


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
