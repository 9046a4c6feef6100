"""Recipes exact to their references: each reference's published values, read from the resolved recipes; the
_base_ files they build on; the multi-task loss as MULAN computes it; the lr rule at a declared reference batch;
bad settings refused in one line before any work."""
import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers import SAMPLE, run_main, small_heads, tiny_backbone
from ladder_zoo.models import MODELS
from train.config import Config, OptimConfig, load_config, read_recipe, to_dict
from train.data.views import view_specs
from train.losses import byol_loss, simsiam_loss
from train.model import build_siamese
from train.optim import build_optimizer, set_learning_rate
from train.schedules import describe_lr, learning_rate

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "train" / "configs"


# --- each reference's values, as the resolved recipes must have them ------------------------------------------------
def lars(lr, ref_batch, weight_decay, eta=0.001, clip_lars_lr=False, min_lr=0.0):
    return {"optim.name": "lars", "optim.lr": lr, "optim.ref_batch": ref_batch, "optim.weight_decay": weight_decay,
            "optim.eta": eta, "optim.clip_lars_lr": clip_lars_lr, "optim.min_lr": min_lr, "optim.warmup_epochs": 10.0,
            "optim.exclude_bias_norm": True, "optim.fixed_predictor_lr": False}


def sgd(lr, ref_batch, weight_decay, fixed_predictor_lr, exclude_tokens=True):  # no warmup, every parameter decayed
    return {"optim.name": "sgd", "optim.lr": lr, "optim.ref_batch": ref_batch, "optim.weight_decay": weight_decay,
            "optim.min_lr": 0.0, "optim.warmup_epochs": 0.0, "optim.exclude_bias_norm": False,
            "optim.exclude_tokens": exclude_tokens, "optim.fixed_predictor_lr": fixed_predictor_lr}


def adamw(lr, ref_batch, weight_decay, min_lr, warmup_epochs, betas, clip_grad, exclude_tokens, drop_path_rate):
    return {"optim.name": "adamw", "optim.lr": lr, "optim.ref_batch": ref_batch, "optim.weight_decay": weight_decay,
            "optim.weight_decay_end": None, "optim.min_lr": min_lr, "optim.warmup_epochs": warmup_epochs,
            "optim.betas": betas, "optim.clip_grad": clip_grad, "optim.exclude_bias_norm": True,
            "optim.exclude_tokens": exclude_tokens, "optim.fixed_predictor_lr": False,
            "model_kwargs.drop_path_rate": drop_path_rate}


def views(crop_scale, interpolation, jitter, blur_p, solarize_p):  # of the two global views
    return {"data.augment.crop_scale": crop_scale, "data.augment.interpolation": interpolation,
            "data.augment.jitter": jitter, "data.augment.blur_p": blur_p, "data.augment.solarize_p": solarize_p}


def heads(proj_hidden, proj_out, pred_hidden, proj_layers=None):
    return {"method.proj_hidden": proj_hidden, "method.proj_out": proj_out, "method.pred_hidden": pred_hidden,
            "method.proj_layers": proj_layers}


BYOL_VIEWS = views((0.08, 1.0), "bicubic", (0.4, 0.4, 0.2, 0.1), (1.0, 0.1), (0.0, 0.2))  # deepmind augmentations.py
SIMSIAM_VIEWS = views((0.2, 1.0), "bilinear", (0.4, 0.4, 0.4, 0.1), (0.5, 0.5), (0.0, 0.0))  # main_simsiam.py
NO_BLUR = {"data.augment.blur_p": (0.0, 0.0)}  # METHOD.md's 32 px protocol
BYOL_HEADS, SIMSIAM_HEADS = heads(4096, 256, 4096), heads(2048, 2048, 512)
MULAN_VIT = adamw(3e-4, 256, 0.1, 3e-7, 10.0, (0.9, 0.98), 0.5, False, 0.1)  # CONFIG.md, main.py, optim.py
MOBY_SWIN = adamw(1e-3, 512, 0.05, 5e-6, 5.0, (0.9, 0.999), 5.0, True, 0.2)  # moby_swin_tiny.yaml, config.py
REFERENCES = {
    "the Ladder paper, ImageNet": {**BYOL_VIEWS, **BYOL_HEADS, **lars(7.2, 4096, 1e-6), "batch_size": 4096,
                                   "method.tau": 0.996, "method.tau_end": 1.0},
    "MULAN, ResNet-50": {**BYOL_VIEWS, **BYOL_HEADS, **lars(0.4, 256, 1.5e-6, min_lr=0.0004), "batch_size": 1024,
                         "method.tau": 0.996},
    "MULAN, ViT-S/16": {**BYOL_VIEWS, **heads(4096, 256, 4096, proj_layers=3), **MULAN_VIT, "batch_size": 1024,
                        "model_kwargs.dynamic_img_size": True, "method.tau": 0.998},
    "MoBY, Swin-T": {**BYOL_VIEWS, "data.augment.interpolation": "bilinear", **BYOL_HEADS, **MOBY_SWIN,
                     "batch_size": 512, "method.tau": 0.99},
    "MoBY, ConvNeXt-T": {**BYOL_VIEWS, "data.augment.interpolation": "bilinear", **BYOL_HEADS, **MOBY_SWIN,
                         "model_kwargs.drop_path_rate": 0.1, "batch_size": 512, "method.tau": 0.99},
    "SimSiam, ImageNet": {**SIMSIAM_VIEWS, **SIMSIAM_HEADS, **sgd(0.05, 256, 1e-4, True), "batch_size": 512},
    "solo-learn, CIFAR": {**BYOL_VIEWS, **NO_BLUR, **BYOL_HEADS, **lars(1.0, 256, 1e-5, eta=0.02, clip_lars_lr=True),
                          "batch_size": 256, "method.tau": 0.99, "method.tau_end": 1.0},
    "SimSiam, CIFAR": {**SIMSIAM_VIEWS, **NO_BLUR, **SIMSIAM_HEADS, **sgd(0.03, 256, 5e-4, True), "batch_size": 256},
    "MULAN's ViT optimiser, CIFAR": {**BYOL_VIEWS, **NO_BLUR, **heads(4096, 256, 4096, proj_layers=3),
                                     **adamw(3e-4, 256, 0.1, 3e-7, 10.0, (0.9, 0.98), 0.5, True, 0.1),
                                     "batch_size": 256, "method.tau": 0.99},
    # lightly's 0.06 and 5e-4 at its loss's scale: test_lightly_byol_rate_and_decay_take_lightlys_sgd_steps
    "lightly, BYOL": {**views((0.08, 1.0), "bilinear", (0.4, 0.4, 0.4, 0.1), (0.0, 0.0), (0.0, 0.0)),
                      **heads(1024, 256, 1024), **sgd(0.015, 128, 2e-3, False, exclude_tokens=False),
                      "batch_size": 512, "method.tau": 0.99, "method.tau_end": 0.99},
    "lightly, SimSiam": {**SIMSIAM_VIEWS, **NO_BLUR, **heads(2048, 2048, 512, proj_layers=2),
                         **sgd(0.06, None, 5e-4, False, exclude_tokens=False), "batch_size": 256},
}
FOLLOWS = {  # recipe -> the reference whose values it has
    **{f"{m}_r50_in1k_200ep": "the Ladder paper, ImageNet" for m in ("byol", "ladder_byol", "densebyol",
                                                                      "ladder_densebyol")},
    **{f"{m}_r50_in1k_200ep": "MULAN, ResNet-50" for m in ("byol_mt", "ladder_byol_mt")},
    **{f"{m}_vit_s16_in1k_200ep": "MULAN, ViT-S/16" for m in ("byol_mt", "ladder_byol_mt")},
    "ladder_byol_swin_t_in1k_200ep": "MoBY, Swin-T",
    "ladder_byol_convnext_t_in1k_200ep": "MoBY, ConvNeXt-T",
    **{f"{m}_r50_in1k_200ep": "SimSiam, ImageNet" for m in ("simsiam", "ladder_simsiam")},
    **{f"{m}_r18_cifar_cifar10_200ep": "solo-learn, CIFAR" for m in ("byol", "ladder_byol", "densebyol",
                                                                       "ladder_densebyol", "byol_mt", "ladder_byol_mt")},
    **{f"{m}_r18_cifar_cifar10_200ep": "SimSiam, CIFAR" for m in ("simsiam", "ladder_simsiam")},
    "ladder_byol_vit_t4_cifar_cifar10_200ep": "MULAN's ViT optimiser, CIFAR",
    **{f"{m}_r18_cifar_lightly_cifar10_200ep": "lightly, BYOL" for m in ("byol", "ladder_byol", "densebyol",
                                                                           "ladder_densebyol", "byol_mt", "ladder_byol_mt")},
    **{f"{m}_r18_cifar_lightly_cifar10_200ep": "lightly, SimSiam" for m in ("simsiam", "ladder_simsiam")},
}


def setting(cfg: Config, key: str):
    """The value of a dotted key (``optim.lr``, ``model_kwargs.drop_path_rate``) of a loaded config."""
    return functools.reduce(lambda node, part: node[part] if isinstance(node, dict) else getattr(node, part),
                            key.split("."), cfg)


def test_every_recipe_follows_a_reference():
    assert set(FOLLOWS) == {p.stem for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("recipe", sorted(FOLLOWS))
def test_recipe_has_its_references_values(recipe):
    cfg, expected = load_config(str(CONFIGS / f"{recipe}.yaml")), REFERENCES[FOLLOWS[recipe]]
    assert {key: setting(cfg, key) for key in expected} == expected
    a = cfg.data.augment  # what every reference shares
    assert (a.flip_p, a.jitter_p, a.gray_p, a.blur_sigma) == (0.5, 0.8, 0.2, (0.1, 2.0))
    assert cfg.optim.lr_scaling == "linear" and cfg.optim.momentum == 0.9 and cfg.epochs == 200
    o = cfg.optim  # with 100 steps an epoch, the first step after warmup runs at the peak, the last at min_lr
    scale = cfg.batch_size / o.ref_batch if o.ref_batch else 1.0
    assert learning_rate(round(o.warmup_epochs * 100), cfg, 100) == pytest.approx(o.lr * scale)
    assert learning_rate(cfg.epochs * 100 - 1, cfg, 100) == pytest.approx(o.min_lr * scale, abs=1e-6)


@pytest.mark.parametrize("recipe", sorted(r for r in FOLLOWS if "_mt_" in r))
def test_multitask_recipes_have_mulans_views(recipe):
    """MULAN's augmentations.py and main.py defaults; its BYOL command's task weights."""
    cfg = load_config(str(CONFIGS / f"{recipe}.yaml"))
    a = cfg.data.augment
    assert cfg.method.views == {"global": 2, "local": 2, "cutout": 1}
    assert cfg.method.task_weights == {"global": 1.0, "local": 1.0, "cutout": 1.0}
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


def test_a_recipe_trains_the_method_its_model_names():
    """method.base, levels and views come from the zoo model's row in ladder_zoo.models.METHODS."""
    from ladder_zoo.models import METHODS

    for recipe in FOLLOWS:
        cfg = load_config(str(CONFIGS / f"{recipe}.yaml"))
        method = METHODS[MODELS[cfg.model].method]
        assert (cfg.method.base, cfg.method.levels, cfg.method.views) == (method.base, method.levels, method.views)
    timm_model = load_config(None, ["model=resnet18"]).method  # not a zoo name: the config defaults
    assert (timm_model.base, timm_model.levels, timm_model.views) == ("byol", "- - - G", {"global": 2})


# --- _base_: recipes as deltas ----------------------------------------------------------------------------------
def test_bases_merge_in_order_and_the_recipe_last(tmp_path):
    """A section merges key by key; a mapping value (method.views) replaces the base's; the recipe's keys win."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.yaml").write_text(
        "batch_size: 64\noptim: {lr: 0.5, weight_decay: 0.01}\nmethod: {views: {global: 2, local: 2}}\n")
    (tmp_path / "base" / "b.yaml").write_text("_base_: a.yaml\noptim: {lr: 0.1}\n")
    (tmp_path / "c.yaml").write_text("optim: {lr: 0.2}\nmethod: {tau: 0.99}\n")
    (tmp_path / "r.yaml").write_text("_base_: [base/b.yaml, c.yaml]\nbatch_size: 32\nmethod: {views: {global: 3}}\n")
    assert read_recipe(tmp_path / "r.yaml") == {"batch_size": 32, "optim": {"lr": 0.2, "weight_decay": 0.01},
                                                "method": {"views": {"global": 3}, "tau": 0.99}}
    assert read_recipe(tmp_path / "r.yaml", ["optim.lr=1.5"])["optim"]["lr"] == 1.5


@pytest.mark.parametrize("files, message", [
    ({"r.yaml": "_base_: r.yaml"}, "its _base_ files name each other in a cycle (r.yaml -> r.yaml)"),
    ({"r.yaml": "_base_: a.yaml", "a.yaml": "_base_: r.yaml"}, "in a cycle (r.yaml -> a.yaml -> r.yaml)"),
    ({"r.yaml": "_base_: nope.yaml"}, "its _base_ nope.yaml is no file"),
    ({"r.yaml": "_base_: {a: 1}"}, "_base_ takes a file name or a list of them"),
])
def test_bad_bases_are_one_line_errors(files, message, tmp_path):
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_config(str(tmp_path / "r.yaml"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_print_config_prints_the_recipe_resolved(capsys):
    from train.pretrain import main

    recipe = CONFIGS / "ladder_simsiam_r18_cifar_lightly_cifar10_200ep.yaml"
    result = run_main(main, ["--config", str(recipe), "optim.lr=0.1", "--print-config"], capsys)
    assert result.returncode == 0
    expected = to_dict(load_config(str(recipe), ["optim.lr=0.1"]))
    assert yaml.safe_load(result.stdout) == expected and expected["method"]["base"] == "simsiam"


# --- the multi-task loss: MULAN's plain mean over (view, target) pairs ------------------------------------------
def _pooled(backbone, projectors, x):
    f = backbone.forward_intermediates(x, indices=[4], intermediates_only=True)[0]
    return projectors["res5"](f.mean((2, 3)))


@pytest.mark.parametrize("base", ["byol", "simsiam"])
def test_multitask_loss_is_the_weighted_plain_mean_over_pairs(base):
    counts = {"global": 2, "local": 2, "cutout": 1}
    model = build_siamese(tiny_backbone(), small_heads(base=base, views=counts, **(
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
        targets = [_pooled(*target_net, x) for x in views["global"]]
    weight = 1.0 if base == "byol" else 1 / 3  # MULAN's commands: --task-weights 1 1 1 / 0.333 0.333 0.333
    expected = 0.0
    for kind, xs in views.items():
        q = model.predictors["res5"][kind]
        pairs = [(i, j) for i in range(len(xs)) for j in range(2) if kind != "global" or i != j]
        expected += weight * sum(loss(q(_pooled(model.backbone, model.projectors, xs[i])), targets[j]).mean()
                                 for i, j in pairs) / len(pairs)
    torch.testing.assert_close(out["loss"], expected)


def test_two_global_views_alone_weigh_their_pairs_as_the_base_does():
    """BYOL sums its two directions, L(q(y_1), y'_2) + L(q(y_2), y'_1); SimSiam averages them (its paper's Eq. 2);
    with local views too, the global task is a plain mean (MULAN)."""
    x = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    for base, loss, weight in (("byol", byol_loss, 2.0), ("simsiam", simsiam_loss, 1.0)):
        model = build_siamese(tiny_backbone(), small_heads(base=base)).eval()
        assert model.task_weights == {"global": weight}
        with torch.no_grad():
            p = [model.predictors["res5"]["global"](model.embed(v)["res5"].y) for v in x]
            z = [model.embed(v, target=base == "byol")["res5"].y for v in x]
            mean = (loss(p[0], z[1]).mean() + loss(p[1], z[0]).mean()) / 2
            torch.testing.assert_close(model({"global": x})["loss"], weight * mean)
    multitask = build_siamese(tiny_backbone(), small_heads(views={"global": 2, "local": 1}))
    assert multitask.task_weights == {"global": 1.0, "local": 1.0}


def test_task_weights_must_cover_every_view_type():
    with pytest.raises(ValueError, match="no weight for view type"):
        build_siamese(tiny_backbone(), small_heads(views={"global": 2, "local": 2}, task_weights={"global": 1.0}))


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


def test_lightly_byol_rate_and_decay_take_lightlys_sgd_steps():
    """lightly's CIFAR-10 BYOL trains on 0.5 (-cos(p0, z1') - cos(p1, z0')) with SGD lr 0.06 x batch / 128, weight
    decay 5e-4. BYOL's loss, (2 - 2 cos) summed over both directions (the model's), has 4 x its gradient: with SGD
    (momentum, coupled decay) lr / 4 and 4 x decay take the same steps, so the lightly recipes state lr 0.015 x
    batch / 128, decay 2e-3. At the recipes' batch 512: 0.06 here, 0.24 in lightly's benchmark."""
    cfg = load_config(str(CONFIGS / "byol_r18_cifar_lightly_cifar10_200ep.yaml"))
    lr = learning_rate(0, cfg, 97)  # no warm-up: the first step runs at the peak
    assert cfg.batch_size == 512 and lr == pytest.approx(0.06)
    torch.manual_seed(0)
    ours = build_siamese(tiny_backbone(), small_heads()).train()
    theirs = copy.deepcopy(ours)
    sgd_ours = build_optimizer(ours, cfg.optim, [])
    set_learning_rate(sgd_ours, lr, lr)
    sgd_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.06 * cfg.batch_size / 128,
                                 momentum=0.9, weight_decay=5e-4)

    def lightly_loss(model, views):  # cifar10_benchmark.py's BYOLModel.training_step, on this model's heads
        p = [model.predictors["res5"]["global"](model.embed(x)["res5"].y) for x in views]
        with torch.no_grad():
            z = [model.embed(x, target=True)["res5"].y for x in views]
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
    untrained = build_siamese(tiny_backbone(), small_heads())
    moved = list(zip(ours.parameters(), theirs.parameters(), untrained.parameters()))
    assert max((a - c).abs().max().item() for a, _, c in moved) > 1e-3  # the steps moved the weights
    for a, b, _ in moved:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
