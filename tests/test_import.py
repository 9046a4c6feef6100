"""Any trainer's checkpoint into the zoo: ``ladder-zoo import`` (a Hub folder) and ``create_model(NAME,
checkpoint_path=...)``, each checked against the source network's own features on the same input.

Checkpoints are made by the peers' own code where it installs here (lightly and its Lightning trainer; mmpretrain,
which continues mmselfsup 1.x), else by fixtures that follow the source at the commit named (layouts.py's rows)."""
import argparse
import copy
import os
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import ladder_zoo
from helpers import run_main
from ladder_zoo.cli import main
from sources import dino_vit_backbone, mmselfsup_state, resnet50_backbone, torchvision_vit

PEERS = Path(__file__).resolve().parents[1] / ".peers" / "mmpretrain"

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def features(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).flatten(1)


def imports_as(capsys, tmp_path, checkpoint, name, reference, x=X, *options):
    """Import ``checkpoint`` as ``name`` by the CLI and by path: both give ``reference``'s features on ``x``."""
    out = tmp_path / "hub" / f"{name}.imported"
    result = run_main(main, ["import", str(checkpoint), "--model", name, "--out", str(out), *options], capsys)
    assert result.returncode == 0, result.stderr
    expected = features(reference, x)
    weights = "target" if "target" in options else None
    for source, pick in ((out, None), (checkpoint, weights)):  # the folder holds the backbone picked
        model = ladder_zoo.create_model(name, checkpoint_path=source, pretrained_weights=pick)
        torch.testing.assert_close(features(model, x), expected, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    return out, result.stdout


def resnet18_cifar() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem, as lightly's and solo-learn's CIFAR recipes build it."""
    resnet = torchvision.models.resnet18()
    resnet.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    resnet.maxpool = nn.Identity()
    return resnet


# --- lightly: its modules, its Lightning trainer's checkpoint -------------------------------------------------------
@pytest.fixture(scope="module")
def lightly_byol(tmp_path_factory):
    """lightly's BYOL as examples/pytorch_lightning/byol.py builds it (lightly @ e8d317f): the backbone an
    nn.Sequential of torchvision ResNet-18's children, a momentum copy; one training step, saved by Lightning's
    Trainer."""
    pl = pytest.importorskip("pytorch_lightning", reason="lightly's trainer is Lightning")
    pytest.importorskip("lightly", reason="lightly is not installed")
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    class BYOL(pl.LightningModule):
        def __init__(self):
            super().__init__()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = BYOLProjectionHead(512, 1024, 256)
            self.prediction_head = BYOLPredictionHead(256, 1024, 256)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NegativeCosineSimilarity()

        def forward(self, x):
            return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

        def forward_momentum(self, x):
            return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

        def training_step(self, batch, batch_idx):
            update_momentum(self.backbone, self.backbone_momentum, m=0.99)
            update_momentum(self.projection_head, self.projection_head_momentum, m=0.99)
            x0, x1 = batch[0]
            return 0.5 * (self.criterion(self(x0), self.forward_momentum(x1))
                          + self.criterion(self(x1), self.forward_momentum(x0)))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.06)

    root = tmp_path_factory.mktemp("lightly")
    torch.manual_seed(0)
    model = BYOL()
    optimizer = model.configure_optimizers()
    model.training_step((torch.randn(2, 4, 3, 32, 32).unbind(), None), 0).backward()  # one step: online moves on
    optimizer.step()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(root / "byol.ckpt")  # Lightning's checkpoint, as a fit's ModelCheckpoint writes it
    return root / "byol.ckpt", model


def test_lightly_lightning_checkpoint(lightly_byol, tmp_path, capsys):
    checkpoint, model = lightly_byol
    out, stdout = imports_as(capsys, tmp_path, checkpoint, "byol_r18", model.backbone)
    assert "lightly" in stdout and "online backbone" in stdout
    card = (out / "README.md").read_text()
    assert "byol.ckpt" in card and "from `byol.ckpt` (lightly, its online backbone" in card and "license: unknown" in card
    imports_as(capsys, tmp_path / "target", checkpoint, "byol_r18", model.backbone_momentum, X, "--weights", "target")
    assert not torch.equal(features(model.backbone), features(model.backbone_momentum))  # the two differ


def test_plain_timm_and_the_zoo_read_the_imported_folder(lightly_byol, tmp_path, capsys):
    import timm

    checkpoint, model = lightly_byol
    out, _ = imports_as(capsys, tmp_path, checkpoint, "byol_r18", model.backbone)
    plain = timm.create_model(f"local-dir:{out}", pretrained=True)  # timm's resnet18, no zoo code in the loop
    assert type(plain).__module__ == "timm.models.resnet"
    torch.testing.assert_close(features(plain), features(model.backbone), rtol=1e-4, atol=1e-5)
    stages = ladder_zoo.create_model("byol_r18", checkpoint_path=out, features_only=True)
    assert [f.shape[1] for f in stages(X)] == [64, 64, 128, 256, 512]


def test_lightly_train_exported_model(tmp_path, capsys):
    """lightly-train's exported_last.pt: torch.save(model.state_dict()) of the torchvision model it trained
    (lightly-train @ 8f5a75c, _models/torchvision/torchvision_package.py export_model), its fc included."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), tmp_path / "exported_last.pt")
    model.fc = nn.Identity()
    imports_as(capsys, tmp_path, tmp_path / "exported_last.pt", "byol_r18", model)


# --- mmpretrain (mmselfsup 1.x's successor): its BYOL, its checkpoint dict ----------------------------------------
@pytest.fixture(scope="module")
def mmpretrain():
    pytest.importorskip("mmcv", reason="mmpretrain's models need mmcv (a wheel in ../shared/wheels)")
    # mmpretrain sits outside the venv (.ci/run: pip install --target .peers/mmpretrain): mmdet 3.3 imports it
    # whenever it is importable, and its multimodal models break that import under transformers 5. Appended, last:
    # every other package still comes from the venv.
    if not PEERS.is_dir():
        pytest.skip(f"mmpretrain is not installed (.ci/run puts it in {PEERS})")
    if str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))
    import mmpretrain.utils.dependency  # the folder is there: a failing import is an error, not a skip

    # mmpretrain 1.2.0's multimodal models do not import under transformers 5 (BertPreTrainedModel); the SSL ones
    # do not need them: register placeholders for them, as mmpretrain does when transformers is absent
    mmpretrain.utils.dependency.WITH_MULTIMODAL = False
    import mmpretrain.models
    from mmengine.registry import DefaultScope

    # its registries, whatever an mmdet or mmseg test run before in this process made mmengine's default scope
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        yield mmpretrain.models


def mmpretrain_byol(models, depth: int, neck: int):
    """mmpretrain's BYOL as mmselfsup 1.x's configs/selfsup/_base_/models/byol.py builds it (BN for SyncBN)."""
    return models.BYOL(
        backbone=dict(type="ResNet", depth=depth, in_channels=3, out_indices=[3],  # mmselfsup: [4], its stem index 0
                      norm_cfg=dict(type="BN")),
        neck=dict(type="NonLinearNeck", in_channels=512 * (4 if depth == 50 else 1), hid_channels=neck,
                  out_channels=256, num_layers=2, with_bias=True, with_last_bn=False, with_avg_pool=True,
                  norm_cfg=dict(type="BN")),
        head=dict(type="LatentPredictHead", loss=dict(type="CosineSimilarityLoss"),
                  predictor=dict(type="NonLinearNeck", in_channels=256, hid_channels=neck, out_channels=256,
                                 num_layers=2, with_bias=True, with_last_bn=False, with_avg_pool=False,
                                 norm_cfg=dict(type="BN"))))


def test_mmpretrain_checkpoint(mmpretrain, tmp_path, capsys):
    from mmengine.runner.checkpoint import save_checkpoint

    torch.manual_seed(2)
    byol = mmpretrain_byol(mmpretrain, 18, 64)
    byol.init_weights()
    with torch.no_grad():
        for p in byol.target_net.parameters():
            p.add_(0.01)  # the EMA target has moved away from the online network
    save_checkpoint({"meta": {"epoch": 1}, "state_dict": byol.state_dict()}, str(tmp_path / "epoch_1.pth"))

    class Pooled(nn.Module):  # mmpretrain's ResNet gives the res5 map; the zoo model pools it
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone(x)[-1].mean((2, 3))

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    _, stdout = imports_as(capsys, tmp_path, tmp_path / "epoch_1.pth", "byol_r18", Pooled(byol.backbone), x)
    assert "mmselfsup / mmpretrain" in stdout
    imports_as(capsys, tmp_path / "target", tmp_path / "epoch_1.pth", "byol_r18", Pooled(byol.target_net.module[0]), x,
               "--weights", "target")


def test_the_mmselfsup_fixtures_are_mmpretrains_layout(mmpretrain):
    """tests/sources.py writes mmselfsup 1.x's BYOL and SimSiam R50 by hand (test_external.py): the keys and shapes
    of mmpretrain's own BYOL and SimSiam built with mmselfsup's configs."""
    bn = dict(type="BN")
    simsiam = mmpretrain.SimSiam(
        backbone=dict(type="ResNet", depth=50, out_indices=[3], norm_cfg=bn, zero_init_residual=True),
        neck=dict(type="NonLinearNeck", in_channels=2048, hid_channels=2048, out_channels=2048, num_layers=3,
                  with_last_bn_affine=False, with_avg_pool=True, norm_cfg=bn),
        head=dict(type="LatentPredictHead", loss=dict(type="CosineSimilarityLoss"),
                  predictor=dict(type="NonLinearNeck", in_channels=2048, hid_channels=512, out_channels=2048,
                                 with_avg_pool=False, with_last_bn=False, with_last_bias=True, norm_cfg=bn)))
    for method, model in (("byol", mmpretrain_byol(mmpretrain, 50, 4096)), ("simsiam", simsiam)):
        made = {k: tuple(v.shape) for k, v in mmselfsup_state(method, resnet50_backbone(0), 0).items()}
        assert made == {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- fixtures that follow the sources: solo-learn, MoCo, SimSiam, MULAN, DINO --------------------------------------
def test_solo_learn_checkpoint(tmp_path, capsys):
    """solo-learn's Lightning checkpoint (solo-learn @ 9187ea3, solo/methods/base.py, byol.py): backbone (torchvision
    ResNet-18, CIFAR stem, fc Identity), momentum_backbone, projector, predictor, classifier (its online probe), and
    the omegaconf cfg in hyper_parameters."""
    omegaconf = pytest.importorskip("omegaconf", reason="solo-learn's cfg is omegaconf's")
    torch.manual_seed(4)
    online, target = resnet18_cifar(), resnet18_cifar()
    online.fc = target.fc = nn.Identity()
    state = {**{f"backbone.{k}": v for k, v in online.state_dict().items()},
             **{f"momentum_backbone.{k}": v for k, v in target.state_dict().items()},
             **{f"projector.{k}": v for k, v in nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64)).state_dict().items()},
             "predictor.0.weight": torch.randn(64, 64), "classifier.weight": torch.randn(10, 512),
             "classifier.bias": torch.zeros(10)}
    cfg = omegaconf.OmegaConf.create({"method": "byol", "backbone": {"name": "resnet18"}, "data": {"dataset": "cifar10"}})
    torch.save({"epoch": 999, "global_step": 39000, "pytorch-lightning_version": "2.0.0", "state_dict": state,
                "hyper_parameters": {"cfg": cfg}}, tmp_path / "byol-cifar10.ckpt")
    _, stdout = imports_as(capsys, tmp_path, tmp_path / "byol-cifar10.ckpt", "byol_r18_cifar", online)
    assert "solo-learn" in stdout


def test_official_moco_and_simsiam_checkpoints(tmp_path, capsys):
    """MoCo v2 (moco @ a419ef2, moco/builder.py: encoder_q / encoder_k, an MLP in their fc) and SimSiam (simsiam @
    a7bc177, simsiam/builder.py: encoder, whose fc is the projector, and predictor), saved by their main_*.py as
    {'epoch', 'arch', 'state_dict' of the DDP model, 'optimizer'}."""
    torch.manual_seed(5)
    encoder_q = torchvision.models.resnet18(num_classes=128)
    encoder_q.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), encoder_q.fc)
    encoder_k = copy.deepcopy(encoder_q)
    state = {**{f"module.encoder_q.{k}": v for k, v in encoder_q.state_dict().items()},
             **{f"module.encoder_k.{k}": v + 0.01 for k, v in encoder_k.state_dict().items()},
             "module.queue": torch.randn(128, 4096), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               tmp_path / "moco.pth.tar")
    encoder_q.fc = nn.Identity()
    _, stdout = imports_as(capsys, tmp_path, tmp_path / "moco.pth.tar", "byol_r18", encoder_q)
    assert "MoCo v1/v2 (official)" in stdout

    encoder = torchvision.models.resnet18(num_classes=2048, zero_init_residual=True)
    encoder.fc = nn.Sequential(nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(), encoder.fc)
    state = {**{f"module.encoder.{k}": v for k, v in encoder.state_dict().items()},
             "module.predictor.0.weight": torch.randn(512, 2048)}
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": state, "optimizer": {}}, tmp_path / "simsiam.pth.tar")
    encoder.fc = nn.Identity()
    _, stdout = imports_as(capsys, tmp_path / "s", tmp_path / "simsiam.pth.tar", "simsiam_r18", encoder)
    assert "SimSiam (official)" in stdout


def test_mulan_and_dino_training_checkpoints(tmp_path, capsys):
    """MULAN's checkpoint.pth (mulan @ 6f38ec9b main.py: online_model / target_model of DDP networks with
    backbone, projector, predictors; its ResNet keys torchvision's, here at ResNet-18 size), and DINO's (dino @
    7c446df main_dino.py: student / teacher with backbone and head, args a Namespace; evaluated: the teacher)."""
    torch.manual_seed(6)
    online, target = torchvision.models.resnet18(), torchvision.models.resnet18()
    online.fc = target.fc = nn.Identity()
    networks = {which: {**{f"module.backbone.{k}": v for k, v in net.state_dict().items()},
                        "module.projector.0.weight": torch.randn(64, 512)} for which, net in
                (("online_model", online), ("target_model", target))}
    torch.save({"epoch": 200, **networks, "optimizer": {}, "scaler": {}}, tmp_path / "checkpoint.pth")
    imports_as(capsys, tmp_path, tmp_path / "checkpoint.pth", "byol_mt_r18", online)
    imports_as(capsys, tmp_path / "t", tmp_path / "checkpoint.pth", "byol_mt_r18", target, X, "--weights", "target")

    student, teacher = (dino_vit_backbone(192, 3, seed, patch=4, size=32) for seed in (7, 8))
    head = {"head.mlp.0.weight": torch.randn(64, 192), "head.last_layer.weight_g": torch.ones(1024, 1)}
    torch.save({"student": {**{f"module.backbone.{k}": v for k, v in student.items()},
                            **{f"module.{k}": v for k, v in head.items()}},
                "teacher": {**{f"backbone.{k}": v for k, v in teacher.items()}, **head},
                "optimizer": {}, "epoch": 100, "args": argparse.Namespace(arch="vit_tiny", patch_size=4),
                "dino_loss": {"center": torch.zeros(1, 1024)}}, tmp_path / "dino.pth")
    _, stdout = imports_as(capsys, tmp_path / "d", tmp_path / "dino.pth", "ladder_byol_vit_t4_cifar",
                           torchvision_vit(teacher, heads=3, size=32, patch=4))
    assert "DINO checkpoint" in stdout and "target backbone" in stdout


# --- bad inputs: one line each, nothing written ---------------------------------------------------------------------
class RunsCode:
    """What a malicious pickle holds: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("case", ["another network", "truncated", "runs code", "unknown layout", "target of SimSiam"])
def test_bad_checkpoints_are_one_line_and_write_nothing(tmp_path, capsys, case):
    state = {f"backbone.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}
    path, name, options = tmp_path / "ckpt.pth", "byol_r50", []
    torch.save({"state_dict": state}, path)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
        name = "byol_r18"
    elif case == "runs code":
        torch.save({"state_dict": state, "callbacks": RunsCode(tmp_path / "pwned")}, path)
        name = "byol_r18"
    elif case == "unknown layout":
        torch.save({"weights": {"net.conv1.weight": torch.randn(64, 3, 7, 7)}, "ema": {"x": torch.zeros(1)}}, path)
    elif case == "target of SimSiam":
        name, options = "simsiam_r18", ["--weights", "target"]
    out = tmp_path / "hub" / f"{name}.x"
    result = run_main(main, ["import", str(path), "--model", name, "--out", str(out), *options], capsys)
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("ladder-zoo import: error: "), result.stderr
    assert not (tmp_path / "hub").exists() and not (tmp_path / "pwned").exists()
    expected = {"another network": "(a model with a backbone, online backbone) does not fit byol_r50: missing", "truncated": "truncated", "runs code": "pickles posix.system, which is not data",
                "unknown layout": "unknown layout", "target of SimSiam": "holds no target backbone"}[case]
    assert expected in line, line
    if case == "another network":
        assert "It is the backbone of r18: load it as one of byol_r18" in line
