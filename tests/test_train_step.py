"""train/step.py: the compiled step against the eager one on the CPU, the compile modes, bench --profile."""
import json

import pytest
import torch

from test_train_runs import TINY
from train.config import config_from_dict, load_config, to_dict
from train.pretrain import train
from train.runlog import RunLog

# 16 px crops of the 40-image sample, 20 steps at batch 8; float32 (bf16 autocast is emulated, slowly, on CPUs)
SMALL = [*TINY, "data.image_size=16", "epochs=4", "checkpoint_every=20"]


def test_compiled_step_matches_eager_without_recompiling(tmp_path, monkeypatch):
    """20 steps with compile=default (forward, backward, optimizer step + EMA, and the in-memory augmentation
    as one graph): the logged losses follow the eager run's, and no step after the second compiles anything
    although the learning rate and the EMA rate change every step (they are device tensors)."""
    graphs = []
    step = RunLog.step

    def counting(self):
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        step(self)

    def losses(run_dir):
        return torch.tensor([json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()])

    eager = losses(train(load_config(None, [*SMALL, f"out_dir={tmp_path / 'eager'}"])))
    torch._dynamo.reset()
    monkeypatch.setattr(RunLog, "step", counting)
    compiled_dir = train(load_config(None, [*SMALL, "compile=default", f"out_dir={tmp_path / 'compiled'}"]))
    compiled = losses(compiled_dir)
    assert len(eager) == len(compiled) == 20
    assert eager[-1] < eager[0] - 1  # the run learns: the comparison is not of constants
    # bf16 noise is 2^-8 = 0.4 % per rounding; float32 kernels fused differently stay well inside 2 % over 20 steps
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=0)
    assert graphs[0] >= 3  # dynamo graphs: augmentation, forward (its backward by AOTAutograd), update
    assert graphs[1] == graphs[-1], f"recompiled after step 2: graphs per step {graphs}"
    saved = torch.load(compiled_dir / "last.pt", weights_only=True)
    assert saved["step"] == 20 and all(torch.isfinite(v).all() for v in saved["model"].values()
                                       if v.is_floating_point())


def test_compiled_one_level_model_keeps_the_graph_of_its_loss():
    """BYOL is the one-level model ('- - - G'): compiled, its loss (1.0 x L beside L's logged value) once came out
    of the graph without grad_fn and the first backward failed."""
    from train.model import build_model

    model = build_model(load_config(None, [*SMALL, "method.levels=- - - G"])).train()
    views = {"global": [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]}
    eager = model(views)
    compiled = torch.compile(model)(views)
    assert compiled["loss"].grad_fn is not None
    compiled["loss"].backward()
    assert model.backbone.conv1.weight.grad is not None
    torch.testing.assert_close(compiled["loss"], eager["loss"], rtol=1e-4, atol=0)


def test_lars_state_exists_before_the_first_step():
    """A step captured as a CUDA graph (reduce-overhead) must read the momentum buffers, not create them."""
    from train.optim import LARS

    w = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = LARS([w], lr=0.1)
    buffer = optimizer.state[w]["momentum_buffer"]
    assert torch.equal(buffer, torch.zeros_like(w))
    w.grad = torch.ones_like(w)
    optimizer.step()
    assert optimizer.state[w]["momentum_buffer"] is buffer and buffer.abs().sum() > 0  # updated in place


def test_compile_modes():
    assert load_config(None, []).compile == "none"
    assert load_config(None, ["compile=true"]).compile == "default"  # recipes written before the modes
    assert load_config(None, ["compile=false"]).compile == "none"
    assert load_config(None, ["compile=reduce-overhead"]).compile == "reduce-overhead"
    old = to_dict(load_config(None, []))
    old["compile"] = False  # a checkpoint written before the modes
    assert config_from_dict(old).compile == "none"
    with pytest.raises(ValueError, match="compile='fast': choose one of none, default, max-autotune, reduce-overhead"):
        load_config(None, ["compile=fast"])


def test_bench_profile_prints_top_ops_and_idle_fraction(tmp_path, capsys):
    from train.bench import main

    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--batch", "2", "--size", "32", "--steps", "1", "--warmup", "1", "--parts", "a",
                 "b", "--methods", "byol", "--no-amp", "--profile", "--profile-steps", "2", "--cifar", "/none",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "profile of (b) byol R50, model only" in printed and "top ops by self CPU time" in printed
    profile = json.loads(out.read_text())["pretrain_model_only"]["(b) byol R50, model only"]["profile"]
    assert 0 <= profile["idle_fraction"] < 1 and profile["busy_ms_per_step"] > 0
    names = [r["name"] for r in profile["top"]]
    assert len(names) == 15 and any("conv" in n for n in names)  # ResNet-50: convolutions dominate
