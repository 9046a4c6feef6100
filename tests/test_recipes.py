"""Recipes exact to their references: the values that matter, pinned per recipe; the multi-task loss as MULAN
computes it; the lr rule at a declared reference batch; bad settings refused in one line before any work."""
import json
from pathlib import Path

import pytest
import torch

from helpers import SAMPLE, run_main, small_heads, tiny_backbone
from train.config import Config, OptimConfig, load_config, to_dict
from train.data.views import view_specs
from train.losses import byol_loss, simsiam_loss
from train.model import LadderSiamese
from train.schedules import describe_lr, learning_rate

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "train" / "configs"

# (crop_scale, interpolation, jitter, blur_p, solarize_p) of each reference's two global views
BYOL_AUG = ((0.08, 1.0), "bicubic", (0.4, 0.4, 0.2, 0.1), (1.0, 0.1), (0.0, 0.2))  # BYOL / Ladder, ImageNet
SOLO_AUG = ((0.08, 1.0), "bicubic", (0.4, 0.4, 0.2, 0.1), (0.0, 0.0), (0.0, 0.2))  # solo-learn CIFAR asymmetric
SIMSIAM_AUG = ((0.2, 1.0), "bilinear", (0.4, 0.4, 0.4, 0.1), (0.5, 0.5), (0.0, 0.0))  # main_simsiam.py
SIMSIAM_CIFAR_AUG = ((0.2, 1.0), "bilinear", (0.4, 0.4, 0.4, 0.1), (0.0, 0.0), (0.0, 0.0))  # blur off at 32 px
MOBY_AUG = ((0.08, 1.0), "bilinear", (0.4, 0.4, 0.2, 0.1), (1.0, 0.1), (0.0, 0.2))  # Transformer-SSL data/build.py
LIGHTLY_AUG = ((0.08, 1.0), "bilinear", (0.4, 0.4, 0.4, 0.1), (0.0, 0.0), (0.0, 0.0))  # SimCLRTransform(cj_strength=0.5)
# (optimizer, lr, ref_batch, batch, weight_decay, min_lr, warmup_epochs, eta, clip, exclude_bias_norm, fixed pred lr)
LADDER_IN1K = ("lars", 7.2, 4096, 4096, 1e-6, 0.0, 10.0, 0.001, False, True, False)
MULAN_IN1K = ("lars", 0.4, 256, 1024, 1.5e-6, 0.0004, 10.0, 0.001, False, True, False)
SIMSIAM_IN1K = ("sgd", 0.05, 256, 512, 1e-4, 0.0, 0.0, None, None, False, True)
SOLO_CIFAR = ("lars", 1.0, 256, 256, 1e-5, 0.0, 10.0, 0.02, True, True, False)
SIMSIAM_CIFAR = ("sgd", 0.03, 256, 256, 5e-4, 0.0, 0.0, None, None, False, True)
MULAN_VIT = ("adamw", 3e-4, 256, 1024, 0.1, 3e-7, 10.0, None, None, True, False)  # CONFIG.md, main.py, optim.py
MOBY_SWIN = ("adamw", 1e-3, 512, 512, 0.05, 5e-6, 5.0, None, None, True, False)  # moby_swin_tiny.yaml, config.py
CIFAR_VIT = ("adamw", 3e-4, 256, 256, 0.1, 3e-7, 10.0, None, None, True, False)  # MULAN's ViT optimiser at batch 256
LIGHTLY_BYOL = ("sgd", 0.015, 128, 512, 2e-3, 0.0, 0.0, None, None, False, False)  # 0.06 and 5e-4 at lightly's loss scale
LIGHTLY_SIMSIAM = ("sgd", 0.06, None, 256, 5e-4, 0.0, 0.0, None, None, False, False)  # lr not scaled with the batch
# transformer settings: (betas, clip_grad, weight_decay_end, exclude_tokens, model_kwargs, proj_layers)
RESNET_X = ((0.9, 0.999), None, None, True, {}, None)  # the defaults: ResNet recipes set none of them
MULAN_VIT_X = ((0.9, 0.98), 0.5, None, False, {"drop_path_rate": 0.1, "dynamic_img_size": True}, 3)
MOBY_SWIN_X = ((0.9, 0.999), 5.0, None, True, {"drop_path_rate": 0.2}, None)
MOBY_CONVNEXT_X = ((0.9, 0.999), 5.0, None, True, {"drop_path_rate": 0.1}, None)  # ConvNeXt-T's stochastic depth
CIFAR_VIT_X = ((0.9, 0.98), 0.5, None, True, {"drop_path_rate": 0.1}, 3)
LIGHTLY_X = ((0.9, 0.999), None, None, False, {}, None)
LIGHTLY_SIMSIAM_X = ((0.9, 0.999), None, None, False, {}, 2)  # the 2-layer CIFAR projector
# heads (proj_hidden, proj_out, pred_hidden) and the EMA's last rate, where a recipe is not the paper's
BYOL_HEADS, SIMSIAM_HEADS, LIGHTLY_BYOL_HEADS = (4096, 256, 4096, 1.0), (2048, 2048, 512, 1.0), (1024, 256, 1024, 0.99)

RECIPES = {
    "byol_r50_in1k_200ep": (BYOL_AUG, LADDER_IN1K, 0.996),
    "ladder_byol_r50_in1k_200ep": (BYOL_AUG, LADDER_IN1K, 0.996),
    "densebyol_r50_in1k_200ep": (BYOL_AUG, LADDER_IN1K, 0.996),
    "ladder_densebyol_r50_in1k_200ep": (BYOL_AUG, LADDER_IN1K, 0.996),
    "byol_mt_r50_in1k_200ep": (BYOL_AUG, MULAN_IN1K, 0.996),
    "ladder_byol_mt_r50_in1k_200ep": (BYOL_AUG, MULAN_IN1K, 0.996),
    "simsiam_r50_in1k_200ep": (SIMSIAM_AUG, SIMSIAM_IN1K, None),
    "ladder_simsiam_r50_in1k_200ep": (SIMSIAM_AUG, SIMSIAM_IN1K, None),
    "byol_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "ladder_byol_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "densebyol_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "ladder_densebyol_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "byol_mt_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "ladder_byol_mt_r18_cifar_cifar10_200ep": (SOLO_AUG, SOLO_CIFAR, 0.99),
    "simsiam_r18_cifar_cifar10_200ep": (SIMSIAM_CIFAR_AUG, SIMSIAM_CIFAR, None),
    "ladder_simsiam_r18_cifar_cifar10_200ep": (SIMSIAM_CIFAR_AUG, SIMSIAM_CIFAR, None),
    "byol_mt_vit_s16_in1k_200ep": (BYOL_AUG, MULAN_VIT, 0.998, MULAN_VIT_X),
    "ladder_byol_mt_vit_s16_in1k_200ep": (BYOL_AUG, MULAN_VIT, 0.998, MULAN_VIT_X),
    "ladder_byol_swin_t_in1k_200ep": (MOBY_AUG, MOBY_SWIN, 0.99, MOBY_SWIN_X),
    "ladder_byol_convnext_t_in1k_200ep": (MOBY_AUG, MOBY_SWIN, 0.99, MOBY_CONVNEXT_X),
    "ladder_byol_vit_t4_cifar_cifar10_200ep": (SOLO_AUG, CIFAR_VIT, 0.99, CIFAR_VIT_X),
    **{f"{method}_r18_cifar_lightly_cifar10_200ep": (LIGHTLY_AUG, LIGHTLY_BYOL, 0.99, LIGHTLY_X, LIGHTLY_BYOL_HEADS)
       for method in ("byol", "ladder_byol", "densebyol", "ladder_densebyol", "byol_mt", "ladder_byol_mt")},
    **{f"{method}_r18_cifar_lightly_cifar10_200ep": (SIMSIAM_CIFAR_AUG, LIGHTLY_SIMSIAM, None, LIGHTLY_SIMSIAM_X)
       for method in ("simsiam", "ladder_simsiam")},
}


def test_the_table_covers_every_recipe():
    assert set(RECIPES) == {p.stem for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_values_are_their_references(recipe):
    (scale, interpolation, jitter, blur_p, solarize_p), optim, tau, *extra = RECIPES[recipe]
    cfg = load_config(str(CONFIGS / f"{recipe}.yaml"))
    a, o, m = cfg.data.augment, cfg.optim, cfg.method
    betas, clip_grad, wd_end, exclude_tokens, model_kwargs, proj_layers = extra[0] if extra else RESNET_X
    heads = extra[1] if len(extra) > 1 else BYOL_HEADS if tau is not None else SIMSIAM_HEADS
    assert (o.betas, o.clip_grad, o.weight_decay_end, o.exclude_tokens) == (betas, clip_grad, wd_end, exclude_tokens)
    assert (cfg.model_kwargs, cfg.method.proj_layers) == (model_kwargs, proj_layers)
    assert (a.crop_scale, a.interpolation, a.jitter, a.blur_p, a.solarize_p) == (scale, interpolation, jitter, blur_p,
                                                                                 solarize_p)
    assert (a.flip_p, a.jitter_p, a.gray_p, a.blur_sigma) == (0.5, 0.8, 0.2, (0.1, 2.0))
    name, lr, ref_batch, batch, wd, min_lr, warmup, eta, clip, exclude, fixed = optim
    assert (o.name, o.lr, o.ref_batch, cfg.batch_size, o.weight_decay) == (name, lr, ref_batch, batch, wd)
    assert (o.min_lr, o.warmup_epochs, o.exclude_bias_norm, o.fixed_predictor_lr) == (min_lr, warmup, exclude, fixed)
    assert o.lr_scaling == "linear" and o.momentum == 0.9 and cfg.epochs == 200
    if name == "lars":
        assert (o.eta, o.clip_lars_lr) == (eta, clip)
    assert (m.proj_hidden, m.proj_out, m.pred_hidden, m.tau_end) == heads
    assert (m.base, m.tau) == ("byol", tau) if tau is not None else m.base == "simsiam"
    if "_mt_" in recipe:  # MULAN's multi-task views (augmentations.py, main.py defaults)
        assert cfg.method.views == {"global": 2, "local": 2, "cutout": 1}
        assert cfg.method.task_weights in (None, {"global": 1.0, "local": 1.0, "cutout": 1.0})
        assert (a.global_scale_mt, a.local_scale, a.cutout_area, a.cutout_ratio) == (
            (0.25, 1.0), (0.08, 0.25), (0.2, 0.4), (0.75, 4 / 3))
        specs = view_specs(cfg.data, cfg.method.views)
        cutout = next(s for s in specs if s.cutout)
        local = next(s for s in specs if s.kind == "local")
        assert cutout.solarize_p == 0.0 and local.solarize_p == 0.0
        assert local.blur_kernel == specs[0].blur_kernel  # MULAN blurs 96 px local crops with the 23 px kernel
        if "in1k" in recipe:
            assert (a.local_size, a.local_blur_p, a.cutout_blur_p, cutout.blur_p) == (96, 0.5, 0.5, 0.5)
            assert specs[0].blur_kernel == 23
    peak_step = round(warmup * 100)  # 100 steps per epoch: the first step after warmup runs at the peak
    scale = batch / ref_batch if ref_batch else 1.0
    assert learning_rate(peak_step, cfg, 100) == pytest.approx(lr * scale)
    assert learning_rate(200 * 100 - 1, cfg, 100) == pytest.approx(min_lr * scale, abs=1e-6)


# Every recipe's resolved values as they were before the recipes became deltas over shared bases (issue 39):
# rewriting a recipe's text must not change one value. Kept until that rewrite has landed.
RESOLVED = json.loads((ROOT / "tests" / "data" / "recipes_resolved.json").read_text())


@pytest.mark.parametrize("recipe", sorted(RESOLVED))
def test_recipe_resolves_to_its_recorded_values(recipe):
    resolved = to_dict(load_config(str(CONFIGS / f"{recipe}.yaml")))
    assert json.dumps(resolved, sort_keys=True) == json.dumps(RESOLVED[recipe], sort_keys=True)  # 1 and 1.0 differ


# --- the multi-task loss: MULAN's plain mean over (view, target) pairs ------------------------------------------
def _pooled(model, backbone, projectors, x):
    f = backbone.forward_intermediates(x, indices=[4], intermediates_only=True)[0]
    return projectors["res5"](f.mean((2, 3)))


@pytest.mark.parametrize("base", ["byol", "simsiam"])
def test_multitask_loss_is_the_weighted_plain_mean_over_pairs(base):
    counts = {"global": 2, "local": 2, "cutout": 1}
    model = LadderSiamese(tiny_backbone(), small_heads(base=base, views=counts, **(
        {"proj_hidden": 32, "proj_out": 16, "pred_hidden": 8} if base == "simsiam" else {})))
    model.eval()  # BN on running statistics: each view's embedding independent of the others
    torch.manual_seed(1)
    views = {"global": [torch.randn(4, 3, 32, 32) for _ in range(2)],
             "local": [torch.randn(4, 3, 16, 16) for _ in range(2)], "cutout": [torch.randn(4, 3, 32, 32)]}
    out = model(views)
    loss = byol_loss if base == "byol" else simsiam_loss
    target_net = (model.target_backbone, model.target_projectors) if base == "byol" else (model.backbone,
                                                                                          model.projectors)
    with torch.no_grad():
        targets = [_pooled(model, *target_net, x) for x in views["global"]]
    weight = 1.0 if base == "byol" else 1 / 3  # MULAN's commands: --task-weights 1 1 1 / 0.333 0.333 0.333
    expected = 0.0
    for kind, xs in views.items():
        q = model.predictors["res5"][kind]
        pairs = [(i, j) for i in range(len(xs)) for j in range(2) if kind != "global" or i != j]
        expected += weight * sum(loss(q(_pooled(model, model.backbone, model.projectors, xs[i])), targets[j]).mean()
                                 for i, j in pairs) / len(pairs)
    torch.testing.assert_close(out["loss"], expected)


def test_two_global_views_keep_byols_symmetrised_sum():
    model = LadderSiamese(tiny_backbone(), small_heads()).eval()
    views = {"global": [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]}
    with_mt_scale = LadderSiamese(tiny_backbone(), small_heads(views={"global": 2, "local": 1})).eval()
    with_mt_scale.load_state_dict(model.state_dict(), strict=False)
    assert model.pair_scale == 2.0 and with_mt_scale.pair_scale == 1.0
    assert model.task_weights == {"global": 1.0}
    with torch.no_grad():  # BYOL's loss: its two directions summed, L(q(y_a), y'_b) + L(q(y_b), y'_a)
        p = [model.predictors["res5"]["global"](model.embed(model.backbone, model.projectors, model.dense_projectors,
                                                            x)["res5"].y) for x in views["global"]]
        z = [model.embed(model.target_backbone, model.target_projectors, model.target_dense_projectors, x)["res5"].y
             for x in views["global"]]
        torch.testing.assert_close(model(views)["loss"], byol_loss(p[0], z[1]).mean() + byol_loss(p[1], z[0]).mean())


def test_task_weights_must_cover_every_view_type():
    with pytest.raises(ValueError, match="no weight for view type"):
        LadderSiamese(tiny_backbone(), small_heads(views={"global": 2, "local": 2}, task_weights={"global": 1.0}))


# --- lr at a reference batch -----------------------------------------------------------------------------------
def test_lr_follows_the_reference_rule_and_says_so():
    cfg = load_config(str(CONFIGS / "byol_r50_in1k_200ep.yaml"), ["batch_size=512"])
    assert max(learning_rate(s, cfg, 10) for s in range(2000)) == pytest.approx(7.2 * 512 / 4096, rel=1e-3)
    assert "scales it (linear rule, optim.lr_scaling) to 0.9" in describe_lr(cfg)
    sqrt = load_config(str(CONFIGS / "byol_r50_in1k_200ep.yaml"), ["batch_size=1024", "optim.lr_scaling=sqrt"])
    assert max(learning_rate(s, sqrt, 10) for s in range(2000)) == pytest.approx(3.6, rel=1e-3)
    plain = Config(batch_size=8, optim=OptimConfig(lr=1.0, warmup_epochs=0))
    assert learning_rate(0, plain, 10) == pytest.approx(1.0) and "not scaled" in describe_lr(plain)


# --- bad settings: one line, before any data is read -------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size=0 is not valid: it takes an integer >= 1"),
    ("batch_size=-4", "batch_size=-4 is not valid"),
    ("amp=fp16", "amp='fp16' is not valid: it takes bf16 or none"),
    ("optim.lr=-1", "optim.lr=-1.0 is not valid"),
    ("data.augment.gray_p=1.5", "data.augment.gray_p=1.5 is not valid: it takes a probability"),
    ("data.augment.crop_scale=[0.5, 0.1]", "data.augment.crop_scale=(0.5, 0.1) is not valid"),
    ("optim.warmup_epochs=300", "optim.warmup_epochs=300.0 is longer than epochs=200"),
    ("method.tau=2", "method.tau=2.0 is not valid"),
])
def test_out_of_range_settings_are_refused_at_load(override, message):
    with pytest.raises(ValueError) as e:
        load_config(str(CONFIGS / "byol_r18_cifar_cifar10_200ep.yaml"), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size=0 is not valid"),
    ("data.path=/no/such/archive.tar.gz", "data.path=/no/such/archive.tar.gz: no such file or folder"),
    ("resume={empty}", "the folder holds no checkpoint (last.pt)"),
])
def test_pretrain_command_errors_are_one_line(override, message, tmp_path, capsys):
    from train.pretrain import main

    (tmp_path / "empty").mkdir()
    result = run_main(main, ["--config", str(CONFIGS / "byol_r18_cifar_cifar10_200ep.yaml"), f"data.path={SAMPLE}",
                             f"out_dir={tmp_path}/run", override.format(empty=tmp_path / "empty")], capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_config_built_in_code_is_checked_by_train_as_a_recipe_is(tmp_path):
    from train.pretrain import train

    cfg = load_config(str(CONFIGS / "byol_r18_cifar_cifar10_200ep.yaml"), [f"out_dir={tmp_path}/run"])
    cfg.amp = "fp16"  # set after loading: only train's own check sees it
    with pytest.raises(ValueError, match="amp='fp16' is not valid: it takes bf16 or none"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_byol_loss_at_a_quarter_of_lightlys_rate_and_four_times_its_decay_takes_lightlys_sgd_steps():
    """lightly's CIFAR-10 BYOL trains on 0.5 (-cos(p0, z1') - cos(p1, z0')) with SGD lr 0.06 x batch / 128, weight
    decay 5e-4. BYOL's loss, (2 - 2 cos) summed over both directions (the model's), has 4 x its gradient: with SGD
    (momentum, coupled decay) lr / 4 and 4 x decay take the same steps, so the lightly recipes state lr 0.015 x
    batch / 128, decay 2e-3. At the recipes' batch 512: 0.06 here, 0.24 in lightly's benchmark."""
    import copy

    import torch.nn.functional as F

    from train.optim import build_optimizer, set_learning_rate

    cfg = load_config(str(CONFIGS / "byol_r18_cifar_lightly_cifar10_200ep.yaml"))
    lr = learning_rate(0, cfg, 97)  # no warm-up: the first step runs at the peak
    assert cfg.batch_size == 512 and lr == pytest.approx(0.06)
    torch.manual_seed(0)
    ours = LadderSiamese(tiny_backbone(), small_heads()).train()
    theirs = copy.deepcopy(ours)
    sgd_ours = build_optimizer(ours, cfg.optim, [])
    set_learning_rate(sgd_ours, lr, lr)
    sgd_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.06 * cfg.batch_size / 128,
                                 momentum=0.9, weight_decay=5e-4)

    def lightly_loss(model, views):  # cifar10_benchmark.py's BYOLModel.training_step, on this model's heads
        p = [model.predictors["res5"]["global"](model.embed(model.backbone, model.projectors, model.dense_projectors,
                                                            x)["res5"].y) for x in views]
        with torch.no_grad():
            z = [model.embed(model.target_backbone, model.target_projectors, model.target_dense_projectors, x)["res5"].y
                 for x in views]
        return 0.5 * (-F.cosine_similarity(p[0], z[1]).mean() - F.cosine_similarity(p[1], z[0]).mean())

    for step in range(3):
        views = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(10 * step + i)) for i in (0, 1)]
        loss_ours, loss_theirs = ours({"global": views})["loss"], lightly_loss(theirs, views)
        assert loss_ours.item() == pytest.approx(4 + 4 * loss_theirs.item(), rel=1e-5)  # the 4 x scale, and its 4
        for model, optimizer, loss in ((ours, sgd_ours, loss_ours), (theirs, sgd_theirs, loss_theirs)):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.update_target(0.99)
    moved = [(a, b, c) for a, b, c in zip(ours.parameters(), theirs.parameters(), LadderSiamese(
        tiny_backbone(), small_heads()).parameters())]
    assert max((a - c).abs().max().item() for a, _, c in moved) > 1e-3  # the steps moved the weights
    for a, b, _ in moved:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
