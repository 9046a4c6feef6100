"""Ladder and multi-task SSL on timm's other backbones (ViT, Swin, ConvNeXt): levels named per family, Eq. 6 for any
level count, the top level pooled by the backbone's own head, dense levels on token grids, AdamW groups without
decay on tokens, two real training steps per family and method, and the zoo names' export -> create_model round trip."""
import json
import math

import pytest
import timm
import torch

import ladder_zoo
from safetensors.torch import save_file
from helpers import ROOT, SAMPLE, small_heads
from train.config import Config, OptimConfig, load_config
from train.eval.features import backbone_from
from train.export import export
from train.model import build_backbone, build_siamese
from train.levels import active_levels, ladder_indices
from train.optim import build_optimizer, param_groups, set_weight_decay
from train.schedules import weight_decay
from train.step import Update, train_step
from train.pretrain import train
from ladder_zoo.models import ARCHS, METHODS, MODELS
from train.checkpoint import load_ssl_checkpoint

# Tiny members of each family, 32 px inputs (timm shrinks through its model arguments).
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2,
                                         dynamic_img_size=True, drop_path_rate=0.1)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=2, embed_dim=16, depths=(1, 1, 1, 1),
                                                  num_heads=(1, 1, 1, 1), strict_img_size=False, drop_path_rate=0.1)),
    "convnext": ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), drop_path_rate=0.1)),
}
TRAINED = ["byol", "ladder_byol", "ladder_densebyol", "byol_mt"]  # one method per loss kind: levels, dense, views


def backbone(family, seed=0, **kw):
    torch.manual_seed(seed)
    name, kwargs = FAMILIES[family]
    return build_backbone(name, **{**kwargs, **kw})


# --- levels -----------------------------------------------------------------------------------------------------
def test_each_family_has_four_ladder_levels():
    def modules(model):
        return [model.feature_info[i]["module"] for i in ladder_indices(model.feature_info)]

    assert modules(timm.create_model("resnet18")) == ["layer1", "layer2", "layer3", "layer4"]  # stem left out
    assert modules(timm.create_model("regnetx_002")) == ["s1", "s2", "s3", "s4"]
    assert modules(backbone("convnext")) == [f"stages.{i}" for i in range(4)]
    assert modules(backbone("swin")) == [f"layers.{i}" for i in range(4)]
    assert modules(backbone("vit")) == [f"blocks.{i}" for i in range(4)]  # 4 blocks: each ends a quarter
    vit_s = timm.create_model("vit_small_patch16_224", embed_dim=16, num_heads=1)  # 12 blocks
    assert modules(vit_s) == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]  # depth quarters, not the last four


def kinds(spec, feature_info):
    return {level.name: level.kind for level in active_levels(spec, feature_info, 0.5)}


def weights(spec, feature_info, w):
    return {level.name: level.weight for level in active_levels(spec, feature_info, w)}


def test_levels_spec_positional_named_and_ladder():
    resnet = timm.create_model("resnet18").feature_info
    vit = timm.create_model("vit_small_patch16_224", embed_dim=16, num_heads=1).feature_info
    assert kinds("- - - G", resnet) == {"res5": "G"}
    assert kinds("D D G G", resnet) == {"res2": "D", "res3": "D", "res4": "G", "res5": "G"}
    assert kinds("G G", resnet) == {"res4": "G", "res5": "G"}  # aligned to the last ladder levels
    assert kinds("res3:G layer4:D", resnet) == {"res3": "G", "res5": "D"}  # level name or module
    assert kinds("G G G G", vit) == {"stage2": "G", "stage5": "G", "stage8": "G", "stage11": "G"}
    assert kinds("ladder", vit) == kinds("G G G G", vit)
    assert kinds("blocks.3:D -1:G", vit) == {"stage3": "D", "stage11": "G"}  # module, index
    assert list(kinds("stage11:G blocks.0:G", vit)) == ["stage0", "stage11"]  # shallow to deep


@pytest.mark.parametrize("spec, message", [
    ("G G G G G", "one of G / D / - per ladder level (res2 res3 res4 res5)"),
    ("G X G G", "one of G / D / - per ladder level"),
    ("- - - -", "switches every loss off"),
    ("res6:G", "no level 'res6' in this backbone; its levels are stem, res2, res3, res4, res5"),
    ("stem:G res5:G", "the stem (stem) takes no loss"),
    ("res5:G layer4:D", "'layer4' is named twice"),
    ("res5:Q", "('res5:Q')"),
    ("res5:G G", "one of G / D / - per ladder level"),  # named and positional mixed
])
def test_bad_levels_are_one_line_errors(spec, message):
    with pytest.raises(ValueError) as e:
        active_levels(spec, timm.create_model("resnet18").feature_info, 0.5)
    assert message in str(e.value) and "\n" not in str(e.value) and "method.levels=" in str(e.value)


def test_ladder_weights_follow_eq6_for_any_level_count():
    resnet = timm.create_model("resnet18").feature_info
    vit = timm.create_model("vit_small_patch16_224", embed_dim=16, num_heads=1).feature_info
    assert weights("G G G G", vit, 0.5) == {"stage2": 1 / 16, "stage5": 1 / 8, "stage8": 1 / 4, "stage11": 1.0}
    assert weights("res3:G res5:G", resnet, 0.5) == weights("- G - G", resnet, 0.5) == {"res3": 1 / 8, "res5": 1.0}
    # a level off the ladder is a step of its own: blocks 2, 3, 5, 8, 11
    assert weights("blocks.3:G blocks.11:G", vit, 1.0) == {"stage3": 1 / 8, "stage11": 1.0}
    assert weights("G G -", vit, 1.0) == {"stage5": 1 / 4, "stage8": 1 / 2}  # top off
    model = build_siamese(backbone("convnext"), small_heads(levels="G G G G", ladder_w=1.0))
    assert [level.weight for level in model.levels] == [1 / 8, 1 / 4, 1 / 2, 1.0]


# --- what each level sees -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_levels_are_pooled_grids_and_the_top_is_the_backbones_own_feature(family):
    model = build_siamese(backbone(family), small_heads(levels="D G G G")).eval()
    x = torch.randn(3, 3, 32, 32)
    embeddings = model.embed(x)
    levels = [level.name for level in model.levels]
    grids = model.backbone.forward_intermediates(x, indices=[level.index for level in model.levels],
                                                 intermediates_only=True)
    with torch.no_grad():
        own = model.backbone(x)  # num_classes=0: ViT's final-norm class token, Swin / ConvNeXt pool + final norm
        torch.testing.assert_close(embeddings[levels[-1]].y, model.projectors[levels[-1]](own))
        for level, grid in zip(levels[:-1], grids[:-1]):
            torch.testing.assert_close(embeddings[level].y, model.projectors[level](grid.mean((2, 3))))
    assert grids[0].ndim == 4 and embeddings[levels[0]].dense.shape[2:] == grids[0].shape[2:]
    if family == "vit":  # the token grid without the class token: 32 px / patch 8 = 4 x 4
        assert grids[0].shape == (3, 32, 4, 4)
        assert torch.allclose(own, model.backbone.forward_features(x)[:, 0])


def test_target_runs_without_drop_path():
    model = build_siamese(backbone("vit"), small_heads(levels="G G G G"))
    drops = lambda m: [d.drop_prob for d in m.modules() if isinstance(d, timm.layers.DropPath)]  # noqa: E731
    assert drops(model.backbone) and all(p > 0 for p in drops(model.backbone))
    assert all(p == 0 for p in drops(model.target_backbone))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    with torch.no_grad():  # the target is deterministic in train mode; the online network is not
        assert torch.equal(model.target_backbone(x), model.target_backbone(x))
        assert not torch.equal(model.backbone(x), model.backbone(x))


# --- optimisation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, tokens", [
    ("vit", {"backbone.pos_embed", "backbone.cls_token"}),
    ("swin", {f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(4)}),
    ("convnext", set()),
])
def test_no_decay_on_norms_biases_position_embeddings_and_tokens(family, tokens):
    model = build_siamese(backbone(family), small_heads())
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, OptimConfig(name="adamw", weight_decay=0.05), [])
    undecayed = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(g["weight_decay"] == 0.05 for g in groups if g["decay"])
    assert tokens <= undecayed
    assert undecayed == {n for n, p in model.named_parameters() if p.ndim <= 1 and p.requires_grad} | tokens
    if tokens:  # MULAN's AdamW decays them (only 1-d tensors excluded): optim.exclude_tokens=false
        groups = param_groups(model, OptimConfig(name="adamw", weight_decay=0.05, exclude_tokens=False), [])
        assert not tokens & {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}


def test_weight_decay_schedule_and_gradient_clipping():
    cfg = Config(epochs=10, optim=OptimConfig(name="adamw", weight_decay=0.04, weight_decay_end=0.4))
    assert weight_decay(0, cfg, 10) == pytest.approx(0.04) and weight_decay(99, cfg, 10) == pytest.approx(0.4)
    assert weight_decay(49, cfg, 10) == pytest.approx(0.04 + 0.36 * 0.5 * (1 - math.cos(math.pi * 49 / 99)))
    assert weight_decay(50, Config(optim=OptimConfig(weight_decay=0.1)), 10) == 0.1  # null end: constant
    model = build_siamese(backbone("vit"), small_heads(levels="G G G G"))
    optimizer = build_optimizer(model, cfg.optim, [])
    set_weight_decay(optimizer, 0.3)
    assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, 0.3]

    views = {"global": [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]}
    clipped = {}
    optimizer.step = lambda: clipped.update(norm=torch.nn.utils.get_total_norm(
        [p.grad for p in model.parameters() if p.grad is not None]))
    update = Update(model, optimizer, "none", torch.device("cpu"))
    train_step(model, update, optimizer, views, torch.autocast("cpu", enabled=False), 0.99, clip_grad=1e-3)
    assert clipped["norm"] == pytest.approx(1e-3, rel=1e-3)


# --- two real training steps per family and method ---------------------------------------------------------------
def tiny_run(out_dir, model, model_kwargs, levels, views, *extra):
    overrides = [
        f"model={model}", f"model_kwargs={json.dumps(model_kwargs)}", f"method.levels='{levels}'",
        f"method.views={json.dumps(views)}", "method.proj_hidden=32", "method.proj_out=16", "method.pred_hidden=32",
        "method.dense_hidden=16", "method.dense_out=8", "method.proj_layers=3", "method.tau=0.99",
        f"data.path={SAMPLE}", "data.split=train", "data.image_size=32", "data.in_memory=true", "data.workers=0",
        "data.mean=[0.4914, 0.4822, 0.4465]", "data.std=[0.247, 0.2435, 0.2616]", "data.augment.blur_p=[0.0, 0.0]",
        "batch_size=8", "epochs=2", "max_steps=2", "optim.name=adamw",
        "optim.lr=1e-3", "optim.warmup_epochs=0", "optim.weight_decay=0.05", "optim.weight_decay_end=0.2",
        "optim.clip_grad=1.0", "amp=none", "channels_last=false", "device=cpu", "progress=false", "tensorboard=false",
        "log_every=1", f"out_dir={out_dir}", *extra,
    ]
    return train(load_config(None, overrides))


@pytest.mark.parametrize("method", TRAINED)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_cpu_steps(family, method, tmp_path):
    name, kwargs = FAMILIES[family]
    levels, views = METHODS[method].levels, METHODS[method].views
    local = 32 if family == "convnext" else 16  # ConvNeXt-atto's last stage needs 32 px
    run_dir = tiny_run(tmp_path / "run", name, {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                       levels, views, f"data.augment.local_size={local}")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    active = [k for k in records[-1] if k.startswith("loss/")]
    assert len(active) == levels.split().count("G") + levels.split().count("D")
    for r in records:
        assert math.isfinite(r["loss"]) and all(0 < r[k.replace("loss/", "std/")] < 1 for k in active)
    ckpt = load_ssl_checkpoint(run_dir / "last.pt")
    for key in [k for k in ckpt.model if k.startswith("backbone.") and ckpt.model[k].ndim > 1][:3]:
        # the target starts equal and follows by EMA: they differ only if the online backbone moved
        assert not torch.equal(ckpt.model[key], ckpt.model["target_" + key])
    evaluated, _, _ = backbone_from(str(run_dir / "last.pt"))  # train.eval rebuilds it with the run's model_kwargs
    assert evaluated.state_dict().keys() == ckpt.backbone_state_dict().keys()
    if method == "byol_mt":
        assert any(k.startswith("predictors.") and ".local." in k for k in ckpt.model)
    if method == "ladder_densebyol":
        assert any(k.startswith("dense_predictors.") for k in ckpt.model)


# --- zoo names: timm's state dicts; export -> create_model ---------------------------------------------------------
@pytest.mark.parametrize("arch", [a for a, row in ARCHS.items() if row.timm])
def test_zoo_names_are_timms_architectures(arch, tmp_path):
    """The table's stock timm architecture (with its timm_args) is the zoo network: same state dict, same outputs."""
    name = next(n for n, m in MODELS.items() if m.arch == arch)
    ours = ladder_zoo.create_model(name)
    theirs = timm.create_model(ARCHS[arch].timm, num_classes=0, **ARCHS[arch].timm_args)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    size = ours.pretrained_cfg["input_size"][-1]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
        save_file(ours.state_dict(), str(tmp_path / "w.safetensors"))
        features = ladder_zoo.create_model(name, features_only=True, checkpoint_path=tmp_path / "w.safetensors").eval()
        expected = theirs.forward_intermediates(x, indices=list(features.feature_info.out_indices),
                                                intermediates_only=True)
        for a, b in zip(features(x), expected):  # NCHW maps, ViT's at its depth quarters
            torch.testing.assert_close(a, b)


def test_export_then_create_model_gives_equal_features(tmp_path, hub_server, hub_env):
    name = "ladder_byol_vit_t4_cifar"
    run_dir = tiny_run(tmp_path / "run", name, {"drop_path_rate": 0.1}, "G G G G", {"global": 2})
    folder = export(run_dir / "last.pt", tmp_path / "hub" / f"{name}.test_run", dtype="fp32")
    ckpt = load_ssl_checkpoint(run_dir / "last.pt")
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=4).eval()
    reference.load_state_dict(ckpt.backbone_state_dict())  # timm's own architecture takes the trained weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        loaded = ladder_zoo.create_model(name, checkpoint_path=folder).eval()
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)
        features = ladder_zoo.create_model(name, checkpoint_path=folder, features_only=True).eval()
        for a, b in zip(features(x), reference.forward_intermediates(x, indices=[2, 5, 8, 11], intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ladder_zoo.WeightsMismatchError, match="trained as ladder_byol_vit_t4_cifar"):
        ladder_zoo.create_model("ladder_byol_swin_t", checkpoint_path=folder)

    # torch.hub and timm's hf-hub: name (a user's repository on a served Hub) load the same weights
    with torch.no_grad():
        hubbed = torch.hub.load(str(ROOT), name, source="local", checkpoint_path=folder, features_only=True).eval()
        for a, b in zip(hubbed(x), features(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    hub_server.commit("someone/my-vit", {q.name: q.read_bytes() for q in folder.iterdir()})
    hub_env({"HF_ENDPOINT": hub_server.endpoint})
    zoo = ladder_zoo.create_model("hf-hub:someone/my-vit", pretrained=True, features_only=True).eval()
    plain = timm.create_model("hf-hub:someone/my-vit", pretrained=True, features_only=True, out_indices=(2, 5, 8, 11))
    with torch.no_grad():  # ladder_zoo builds the zoo model (its depth quarters by default); timm its own ViT
        for model in (zoo, plain.eval()):
            for a, b in zip(model(x), features(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- detection adapters -------------------------------------------------------------------------------------------
def test_torchvision_fpn_takes_hierarchical_names_but_no_plain_vit():
    from ladder_zoo.integrations.torchvision import backbone_with_fpn, fasterrcnn

    fpn = backbone_with_fpn("ladder_byol_convnext_t", pretrained=False, trainable_layers=3).eval()
    frozen = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("stages") else "")
              for n, p in fpn.body.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "stages.0"}  # as a ResNet's stem and res2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = list(fpn(x).values())
        stages = fpn.body.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape[1:]) for m in maps] == [(256, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2), (256, 1, 1)]
    assert [s.shape[-1] for s in stages] == [16, 8, 4, 2]
    net = fasterrcnn("ladder_byol_convnext_t", num_classes=3, pretrained=False, min_size=64, max_size=64).eval()
    with torch.no_grad():
        assert {"boxes", "scores", "labels"} <= set(net([torch.rand(3, 64, 64)])[0])
    with pytest.raises(ValueError, match="is a plain ViT: every level is at stride 16.*ViTDet simple feature pyramid"):
        backbone_with_fpn("byol_mt_vit_s16", pretrained=False)


def test_cli_info_names_each_familys_levels(capsys):
    from ladder_zoo.cli import main

    assert main(["info", "byol_mt_vit_s16"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and "blocks." in line]
    assert [row[:3] for row in rows] == [["2", "stage2", "blocks.2"], ["5", "stage5", "blocks.5"],
                                         ["8", "stage8", "blocks.8"], ["11", "stage11", "blocks.11"]]


def test_out_of_range_out_indices_name_the_familys_levels():
    """mmdet's and detectron2's adapters count res2..res5 as 1..4; on a ConvNeXt that is one past its last stage."""
    with pytest.raises(ValueError) as e:
        ladder_zoo.create_model("ladder_byol_convnext_t", features_only=True, out_indices=(1, 2, 3, 4))
    assert str(e.value) == ("out_indices=(1, 2, 3, 4) is out of range for ladder_byol_convnext_t: its 4 feature levels "
                            "are 0 stages.0, 1 stages.1, 2 stages.2, 3 stages.3; use indices 0..3 or -4..-1 "
                            "(default (0, 1, 2, 3)).")
    with pytest.raises(ValueError, match="its 12 feature levels are 0 blocks.0, .* 11 blocks.11; .*default \\(2, 5, 8"):
        ladder_zoo.create_model("byol_mt_vit_s16", features_only=True, out_indices=(12,))
    vit = ladder_zoo.create_model("byol_mt_vit_s16", features_only=True, out_indices=(-1,))
    assert vit.feature_info.out_indices == (11,)
