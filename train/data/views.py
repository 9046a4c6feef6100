"""The views of each image: 2 global views with BYOL's per-view probabilities, plus the multi-task local and
cutout views (MULAN). Both augmentation pipelines (``cpu_augment.py``, ``gpu_augment.py``) read these specs."""
from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..config import DataConfig


@dataclass(frozen=True)
class ViewSpec:
    kind: str  # global | local | cutout
    size: int
    scale: Tuple[float, float]
    blur_p: float
    solarize_p: float
    blur_kernel: int  # about 10% of the *global* view size, odd: 23 px at 224 px (BYOL), local views too (MULAN)
    cutout: bool = False


def blur_kernel(image_size: int) -> int:
    return 2 * round(0.05 * image_size) + 1


def view_specs(data: DataConfig, views: Dict[str, int]) -> List[ViewSpec]:
    """Specs in the order the pipelines produce them: global views, then local, then cutout.

    Global view i takes BYOL's blur / solarize probabilities of view (i mod 2); with local views present the
    global crops use the multi-task scale. As in MULAN's ``augmentations.py``: local views blur with p
    ``local_blur_p`` and the global views' kernel (23 px at 224 px, on 96 px crops too), no solarize; the cutout
    view is a global crop with one block (``cutout_area`` of the image, aspect ``cutout_ratio``) filled with the
    mean colour right after crop and flip, then jitter, grayscale and blur with p ``cutout_blur_p``, no solarize.
    """
    aug = data.augment
    multi = views.get("local", 0) > 0 or views.get("cutout", 0) > 0
    global_scale = aug.global_scale_mt if multi else aug.crop_scale
    kernel = blur_kernel(data.image_size)
    specs = [ViewSpec("global", data.image_size, global_scale, aug.blur_p[i % 2], aug.solarize_p[i % 2], kernel)
             for i in range(views["global"])]
    specs += [ViewSpec("local", aug.local_size, aug.local_scale, aug.local_blur_p, 0.0, kernel)
              for _ in range(views.get("local", 0))]
    specs += [ViewSpec("cutout", data.image_size, global_scale, aug.cutout_blur_p, 0.0, kernel, cutout=True)
              for _ in range(views.get("cutout", 0))]
    return specs


def group_views(specs: List[ViewSpec], tensors) -> Dict[str, list]:
    """{kind: [view tensors]} from the flat list the pipelines produce."""
    out: Dict[str, list] = {}
    for spec, t in zip(specs, tensors):
        out.setdefault(spec.kind, []).append(t)
    return out
