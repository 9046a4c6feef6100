"""train.eval: kNN and linear probes against direct computations, view distances, gradient maps, the CLI."""
import json

import pytest
import torch

from helpers import SAMPLE
from train.config import AugmentConfig, DataConfig, load_config
from train.eval.__main__ import main as eval_main
from train.data.imagefolder import decode_rgb
from train.eval.features import class_balanced, backbone_from
from train.eval.gradmaps import gradient_maps
from train.eval.knn import knn_accuracy, knn_predict
from train.eval.linear import linear_probe
from train.eval.views import view_distances
from train.pretrain import train
from train.checkpoint import load_ssl_checkpoint

TINY = [f"data.path={SAMPLE}", "data.split=train", "data.workers=0", "batch_size=8", "max_steps=2", "device=cpu",
        "amp=none", "progress=false", "tensorboard=false", "method.proj_hidden=64", "method.proj_out=32",
        "method.pred_hidden=32"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder")
    recipe = "train/configs/ladder_byol_r18_cifar_cifar10_200ep.yaml"
    return train(load_config(recipe, [*TINY, f"out_dir={out}"])) / "last.pt"


def test_knn_equals_the_weighted_vote_by_hand():
    torch.manual_seed(0)
    train_f, train_y, test_f = torch.randn(50, 8), torch.randint(0, 4, (50,)), torch.randn(7, 8)
    expected = []
    for f in test_f:
        sims = torch.nn.functional.cosine_similarity(f[None], train_f)
        top = sims.topk(10)
        votes = torch.zeros(4)
        for s, i in zip(top.values, top.indices):
            votes[train_y[i]] += torch.exp(s / 0.1)
        expected.append(votes.argmax())
    assert torch.equal(knn_predict(train_f, train_y, test_f, k=10, temperature=0.1, chunk=3), torch.stack(expected))


def test_probes_separate_separable_classes():
    torch.manual_seed(0)
    centres = torch.randn(5, 16) * 4
    y_train, y_test = torch.arange(200) % 5, torch.arange(100) % 5
    x_train, x_test = centres[y_train] + torch.randn(200, 16), centres[y_test] + torch.randn(100, 16)
    assert knn_accuracy(x_train, y_train, x_test, y_test, k=20) > 0.95
    assert linear_probe(x_train, y_train, x_test, y_test, epochs=30, batch_size=64) > 0.95
    shuffled = y_train[torch.randperm(200)]
    assert linear_probe(x_train, shuffled, x_test, y_test, epochs=30, batch_size=64) < 0.5


def test_shown_images_go_round_the_classes():
    from train.eval.features import across_classes

    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)  # an archive sorted by class
    shown = across_classes(labels, list(range(30)), 6, seed=0)
    assert labels[shown].tolist() == [0, 1, 2, 0, 1, 2] and len(set(shown)) == 6
    assert across_classes(labels, list(range(30)), 6, seed=0) == shown  # seeded


def test_class_balanced_takes_per_class_images_or_all():
    labels = torch.tensor([0, 1, 2] * 10)
    picked = class_balanced(labels, per_class=3, seed=1)
    assert len(picked) == 9 and (labels[picked].bincount() == 3).all()
    assert class_balanced(labels, 0) == list(range(30))


def test_view_distances_vanish_without_augmentation(checkpoint):
    model, _, _ = backbone_from(str(checkpoint))
    images = torch.stack([decode_rgb(p.read_bytes()) for p in sorted(SAMPLE.glob("test/*/*.jpg"))[:12]])
    none = DataConfig(image_size=32, augment=AugmentConfig(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                                                          gray_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0)))
    still = view_distances(model, images, none, torch.device("cpu"))
    assert set(still) == {"stem", "res2", "res3", "res4", "res5"} and all(d.abs().max() < 1e-5 for d in still.values())
    moved = view_distances(model, images, DataConfig(image_size=32), torch.device("cpu"))
    assert all(0 < float(d.mean()) < 2 for d in moved.values())


def test_gradient_maps_cover_every_level_above_the_lowest(checkpoint):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    maps = gradient_maps(load_ssl_checkpoint(checkpoint), images, torch.device("cpu"))
    assert set(maps) == {"res3", "res4", "res5"}  # L_res2 left out: uniform after its pooling
    assert all(m.shape == (3, 32, 32) and (m >= 0).all() and m.sum() > 0 for m in maps.values())


def test_eval_cli_writes_json_plots_and_summary(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [str(checkpoint), "--data", str(SAMPLE), "--out", str(out), "--per-class", "3", "--k", "10",
            "--linear-epochs", "5", "--views", "20", "--gradmaps", "2", "--workers", "0"]
    assert eval_main(args) == 0
    label = "ladder_byol_r18_cifar@2"
    progress = capsys.readouterr().err
    assert f"{label} train: 100%" in progress and f"{label} linear res5" in progress
    result = json.loads((out / f"{label}.json").read_text())
    assert result["n_train"] == result["n_test"] == 30 and result["step"] == 2
    for metric in ("knn", "linear"):
        assert set(result[metric]["accuracy"]) == {"stem", "res2", "res3", "res4", "res5"}
        assert all(0 <= a <= 1 for a in result[metric]["accuracy"].values())
    assert result["command"].startswith("python -m train.eval ")
    for png in (f"{label}_gradmaps.png", "view_distances.png", "summary.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert f"| {label} | knn | 30 / 30 (3 per class) | " in summary
    assert "Rows on a class-balanced subset (--per-class) compare runs with each other, not with figures" in summary

    capsys.readouterr()
    assert eval_main([str(out / f"{label}.json"), "--out", str(out)]) == 0  # summary from an earlier evaluation
    assert f"| {label} | linear |" in capsys.readouterr().out


def test_eval_cli_names_unpublished_weights(tmp_path, capsys, isolated_hub):
    with pytest.raises(SystemExit):
        eval_main(["byol_r18_cifar", "--data", str(SAMPLE), "--out", str(tmp_path)])
    assert "No weights are published for byol_r18_cifar.cifar10_200ep" in capsys.readouterr().err


def test_bench_measures_every_part_on_the_cpu(tmp_path, capsys):
    from train.bench import main as bench_main

    out = tmp_path / "bench.json"
    assert bench_main(["--device", "cpu", "--batch", "2", "--size", "32", "--steps", "1", "--warmup", "1",
                       "--no-amp", "--workers", "0", "--methods", "byol", "ladder_densebyol", "--jpeg-data",
                       str(SAMPLE), "--cifar", str(SAMPLE), "--cifar-batch", "8", "--cifar-steps", "1",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["byol_eager_ceiling_img_per_s"] > 0
    assert set(result["pretrain_model_only"]) == {"(b) byol R50, model only", "(b) ladder_densebyol R50, model only"}
    assert len(result["pretrain_with_data"]) == 2 and len(result["cifar"]) == 2 and len(result["features"]) == 2
    assert all(r["img_per_s"] > 0 for part in ("pretrain_with_data", "cifar") for r in result[part].values())
    assert result["cifar"]["(c) byol CIFAR R18, in-memory GPU pipeline"]["epoch_s"] > 0
    assert "eager BYOL ceiling (a) x 3/8" in capsys.readouterr().out
