"""Checkpoints in the exact layouts that other projects publish, built in the tests, and a file server on 127.0.0.1.

Each builder follows its source at the commit it names (the keys, shapes, nesting and the way the file is saved); the
reference network of each compares the zoo's features with the source network's on the same input. The weights
themselves are random: nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import http.server
import math
import threading
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torchvision
from torch import nn

State = Dict[str, torch.Tensor]


_NOISE = torch.randn(1 << 24, generator=torch.Generator().manual_seed(0))  # drawn once: slices are cheap


def randomise(shapes: Dict[str, Tuple[int, ...]], seed: int) -> State:
    """Tensors of these shapes at a trained network's scale, different for each ``seed``: norm scales and running
    variances near 1, the rest small, BN counters as integers."""
    state, start = {}, seed * 7919
    for key, shape in shapes.items():
        n = math.prod(shape)
        start = (start + 104729) % (_NOISE.numel() - n)
        noise = _NOISE[start:start + n].view(shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):  # a norm's scale
            state[key] = noise.abs() * 0.5 + 0.5
        else:
            state[key] = noise * 0.02
    return state


def resnet50_backbone(seed: int) -> State:
    """A ResNet-50 backbone as torchvision keys it (torchvision.models.resnet50 without its fc). MULAN's resnet.py
    (pfdp0/mulan @ 6f38ec9b) is torchvision's with a parameterless pad layer; mmcv's / mmpretrain's ResNet keys the
    same network the same way (conv1, bn1, layer1.0.conv1 ... downsample.0 / .1)."""
    with torch.device("meta"):  # shapes only
        shapes = {k: tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items() if k[:3] != "fc."}
    return randomise(shapes, seed)


def torchvision_resnet50(state: State) -> nn.Module:
    """The source network of a ResNet-50 backbone: torchvision's, pooled features (MULAN's forward ends in avgpool)."""
    with torch.device("meta"):  # no initialisation: the state dict is assigned
        model = torchvision.models.resnet50()
    model.fc = nn.Identity()
    model.load_state_dict(state, assign=True)
    return model.eval()


def dino_vit_backbone(embed_dim: int, heads: int, seed: int, depth: int = 12, patch: int = 16, size: int = 224) -> State:
    """A ViT as MULAN's vision_transformer.py keys it (pfdp0/mulan @ 6f38ec9b, DINO's file): vit_small / vit_base,
    qkv bias, mlp_ratio 4, a class token and no head (num_classes=0)."""
    d, tokens = embed_dim, (size // patch) ** 2 + 1
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, tokens, d), "patch_embed.proj.weight": (d, 3, patch, patch),
              "patch_embed.proj.bias": (d,)}
    for i in range(depth):
        for name, shape in (("norm1.weight", (d,)), ("norm1.bias", (d,)), ("attn.qkv.weight", (3 * d, d)),
                            ("attn.qkv.bias", (3 * d,)), ("attn.proj.weight", (d, d)), ("attn.proj.bias", (d,)),
                            ("norm2.weight", (d,)), ("norm2.bias", (d,)), ("mlp.fc1.weight", (4 * d, d)),
                            ("mlp.fc1.bias", (4 * d,)), ("mlp.fc2.weight", (d, 4 * d)), ("mlp.fc2.bias", (d,))):
            shapes[f"blocks.{i}.{name}"] = shape
    shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
    return randomise(shapes, seed)


def torchvision_vit(state: State, heads: int, size: int = 224, patch: int = 16) -> nn.Module:
    """The same network as DINO's / MULAN's ViT, another implementation: torchvision's VisionTransformer (LayerNorm
    eps 1e-6, exact GELU, q-k-v in_proj, class token after the final norm), its keys mapped from DINO's."""
    d = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    with torch.device("meta"):
        model = torchvision.models.VisionTransformer(size, patch, depth, heads, d, 4 * d)
    model.heads = nn.Identity()
    names = {"norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight", "attn.qkv.bias":
             "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.0",
             "mlp.fc2": "mlp.3"}
    mapped = {"class_token": state["cls_token"], "encoder.pos_embedding": state["pos_embed"],
              "conv_proj.weight": state["patch_embed.proj.weight"], "conv_proj.bias": state["patch_embed.proj.bias"],
              "encoder.ln.weight": state["norm.weight"], "encoder.ln.bias": state["norm.bias"]}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            for ours, theirs in names.items():
                if rest.startswith(ours):
                    mapped[f"encoder.layers.encoder_layer_{i}.{theirs}{rest[len(ours):]}"] = value
    model.load_state_dict(mapped, assign=True)
    return model.eval()


def nonlinear_neck(prefix: str, dims: List[int], bias: bool, last_bias: bool, last_bn: bool, last_affine: bool = True):
    """The keys and shapes of mmselfsup's / mmpretrain's NonLinearNeck (fc0, bn0, fc1, ...): dims in, hidden..., out."""
    shapes = {}
    layers = len(dims) - 1
    for i in range(layers):
        last = i == layers - 1
        shapes[f"{prefix}fc{i}.weight"] = (dims[i + 1], dims[i])
        if (last_bias if last else bias):
            shapes[f"{prefix}fc{i}.bias"] = (dims[i + 1],)
        if not last or last_bn:
            if not last or last_affine:
                shapes.update({f"{prefix}bn{i}.weight": (dims[i + 1],), f"{prefix}bn{i}.bias": (dims[i + 1],)})
            shapes.update({f"{prefix}bn{i}.running_mean": (dims[i + 1],), f"{prefix}bn{i}.running_var": (dims[i + 1],),
                           f"{prefix}bn{i}.num_batches_tracked": ()})
    return shapes


def mmselfsup_state(method: str, backbone: State, seed: int) -> State:
    """The state dict of mmselfsup 1.x's BYOL / SimSiam ResNet-50 (open-mmlab/mmselfsup @ db861f30,
    configs/selfsup/_base_/models/{byol,simsiam}.py): backbone, neck, head.predictor and, for BYOL, the EMA target
    ``target_net = CosineEMA(nn.Sequential(backbone, neck))`` (mmengine keeps it as .module, with a steps counter)."""
    if method == "byol":
        neck = nonlinear_neck("neck.", [2048, 4096, 256], bias=True, last_bias=False, last_bn=False)
        head = nonlinear_neck("head.predictor.", [256, 4096, 256], bias=True, last_bias=False, last_bn=False)
    else:
        neck = nonlinear_neck("neck.", [2048, 2048, 2048, 2048], bias=False, last_bias=False, last_bn=True,
                              last_affine=False)
        head = nonlinear_neck("head.predictor.", [2048, 512, 2048], bias=False, last_bias=True, last_bn=False)
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state.update(randomise({**neck, **head}, seed))
    if method == "byol":  # the target: another copy (its EMA has moved away from the online network)
        state.update({f"target_net.module.0.{k}": v + 0.01 if v.is_floating_point() else v for k, v in backbone.items()})
        state.update({f"target_net.module.1.{k[len('neck.'):]}": v for k, v in state.items() if k.startswith("neck.")})
        state["target_net.steps"] = torch.tensor(250200)
    return state


def save_mmselfsup(path: Path, state: State) -> Path:
    """Save as mmengine's runner saves a checkpoint and mmselfsup's tools/model_converters/publish_model.py
    publishes it (@ db861f30): the optimizer removed, the message hub (HistoryBuffer, numpy) and meta kept, the
    legacy (non-zip) serialization, the sha256 prefix in the file name. Returns the published path."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance(f"publish-{path.name}")
    hub.update_scalar("train/loss", 1.25)
    hub.update_info("iter", 250200)
    checkpoint = {"meta": {"epoch": 200, "iter": 250200, "cfg": "model = dict(type='BYOL', ...)", "seed": 0,
                           "mmengine_version": "0.1.0", "time": "20220825_120000"},
                  "state_dict": state, "message_hub": hub.state_dict(),
                  "param_schedulers": [{"base_lrs": [4.8], "last_epoch": 200}]}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    published = path.with_name(f"{path.stem}_20220825-{sha[:8]}.pth")
    path.rename(published)
    return published


class FileServer:
    """Files served over HTTP on 127.0.0.1 from a folder, each request recorded (method, path)."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(("GET", self.path))
                super().do_GET()

            def log_message(self, *args):  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reference(kind: str) -> Callable[[State], nn.Module]:
    return {"resnet50": torchvision_resnet50, "vit_s16": partial(torchvision_vit, heads=6),
            "vit_b16": partial(torchvision_vit, heads=12)}[kind]
