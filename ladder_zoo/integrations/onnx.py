"""ONNX: a zoo model as an ONNX graph by torch's dynamo exporter, checked against torch with onnxruntime.

    ladder-zoo export-onnx ladder_byol_r50.in1k_200ep --out r50.onnx --features-only --size 512 512

``torch.onnx.export(..., dynamo=True)`` (the default and recommended exporter since torch 2.9, available since 2.5)
captures the model with ``torch.export`` and translates it with onnxscript. The graph takes ``pixel_values``
[batch, 3, H, W], normalised with the ``pretrained_cfg`` mean / std; the batch is dynamic, H and W are fixed at
export (``size``, by default the weights' input size). It returns one output per feature level, named as
``ladder-zoo info`` names the levels (stem, res2..res5; stage0.. for the transformers and ConvNeXt), or with
``features_only=False`` the pooled pre-logits features [batch, C] as ``pooled``. ViT and Swin have a fixed input
size (a position embedding per patch, windows that tile the grid): they export at that size only.
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..models import level_names

INPUT = "pixel_values"
EXPORT_BATCH = 2  # the example batch: 1 would specialise the batch dimension (torch.export's 0/1 rule)
VERIFY_BATCH = 3  # a batch size the export did not see: the check also shows the batch is dynamic


def input_size(model: nn.Module, name: str, size: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """(H, W) to export ``model`` at: ``size``, or the weights' input size; a one-line ValueError where the network
    has a fixed input size (ViT, Swin) and ``size`` is another."""
    cfg = model.pretrained_cfg
    native = tuple(cfg["input_size"][1:])
    if size is None:
        return native
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size {tuple(size)}: give the input height and width, e.g. --size {native[0]} {native[1]}.")
    if cfg.get("fixed_input_size") and tuple(size) != native:
        raise ValueError(
            f"{name} has a fixed input size, {native[0]} x {native[1]} (its position embedding / windows are laid "
            f"out for it): export it at --size {native[0]} {native[1]} (or without --size), not {size[0]} x {size[1]}."
        )
    return tuple(size)


def output_names(model: nn.Module) -> List[str]:
    """The graph's outputs: the feature levels of a ``features_only`` model, else ``pooled``."""
    info = getattr(model, "feature_info", None)
    if hasattr(info, "out_indices"):  # a features_only wrapper's FeatureInfo
        names = level_names(info.info)
        return [names[i] for i in info.out_indices]
    return ["pooled"]


def export(model: nn.Module, out: Path, size: Tuple[int, int]) -> List[str]:
    """Write ``model`` (eval mode, fp32) to ``out`` as ONNX, batch dynamic, input ``size``; returns the output names."""
    model = model.eval().float()
    names = output_names(model)
    example = torch.randn(EXPORT_BATCH, 3, *size)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=names,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    return names


def verify(model: nn.Module, out: Path, size: Tuple[int, int], seed: int = 0) -> Dict[str, float]:
    """Max abs difference between onnxruntime (CPU) running ``out`` and torch running ``model``, per output, on a
    batch of ``VERIFY_BATCH`` random inputs; an error where an output is off by more than 1e-4 of its scale."""
    import onnxruntime

    x = torch.randn(VERIFY_BATCH, 3, *size, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: x.numpy()})
    with torch.no_grad():
        want = model.eval().float()(x)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    diffs = {}
    for output, a, b in zip(session.get_outputs(), got, want):
        diffs[output.name] = float((torch.from_numpy(a) - b).abs().max())
        if diffs[output.name] > 1e-4 * max(1.0, float(b.abs().max())):
            raise ValueError(f"{out}: onnxruntime's {output.name} differs from torch's by {diffs[output.name]:.3g} "
                             "(max abs): the export is wrong; please report it with the command that made it.")
    return diffs
