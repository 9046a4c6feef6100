"""train/step.py: the compiled step against the eager one on the CPU, the compile modes, bench --profile."""
import json

import pytest
import torch

from helpers import TINY_EPOCH_STEPS, TINY_RUN
from train.config import config_from_dict, load_config, to_dict
from train.pretrain import train
from train.runlog import RunLog

# 16 px crops of the 40-image sample, batch 8, float32 (bf16 autocast is emulated, slowly, on CPUs), the augmentation
# eager (the JPEG files' path; tests/test_train_data.py traces the in-memory one), timm's resnet10t
EPOCHS = 4
STEPS = EPOCHS * TINY_EPOCH_STEPS
SMALL = [*TINY_RUN, "model=resnet10t", "data.in_memory=false", f"epochs={EPOCHS}", f"checkpoint_every={STEPS}"]


def losses(run_dir):
    return torch.tensor([json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()])


class EarlierOutputs:
    """What a step's graphs made (the forward's outputs, the gradients of its backward) and whether a later step
    wrote into it: under CUDA graph trees that memory is the later step's (train/step.py). ``after_step(out,
    model)`` after every step; ``written`` names each tensor written after its step ended."""

    def __init__(self):
        self.held, self.written, self.steps = [], [], 0

    def after_step(self, out, model):
        self.written += [name for name, t, version in self.held if t._version != version]
        self.held = [(f"step {self.steps}: out[{k}]", t, t._version) for k, t in out.items()]
        self.held += [(f"step {self.steps}: {n}.grad", p.grad, p.grad._version) for n, p in model.named_parameters()
                      if p.grad is not None]
        self.steps += 1


def test_reduce_overhead_step_matches_eager_and_keeps_the_cuda_graph_rules(tmp_path, monkeypatch, one_thread):
    """20 steps of a Ladder-BYOL with compile=reduce-overhead's graphs (forward and backward, optimizer step + EMA)
    traced by Dynamo and AOTAutograd as on a GPU (the CUDA graphs themselves need one; Inductor's code generation,
    minutes per graph on two cores, is the next test's): the logged losses follow the eager run's; no step after
    the second compiles anything although the learning rate and the EMA rate change every step (device tensors);
    each step marks its begin once; no step writes a tensor an earlier step's graphs made (the gradients are new
    every step); the optimizer state, made before the first step at fixed addresses, is updated, never replaced."""
    from train import pretrain
    from train.step import Step

    graphs, marks, built, earlier = [], [], {}, EarlierOutputs()
    step, accumulate = RunLog.step, RunLog.accumulate

    def counting(self):
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        step(self)

    def watching(self, out):
        earlier.after_step(out, built["model"])
        accumulate(self, out)

    class Built(Step):
        def __init__(self, cfg, net, model, optimizer, *args):
            built.update(model=model, optimizer=optimizer, state={id(p): (s["momentum_buffer"], s[
                "momentum_buffer"].data_ptr()) for p, s in optimizer.state.items()})
            super().__init__(cfg, net, model, optimizer, *args)
            built["step"] = self

    eager = losses(train(load_config(None, [*SMALL, f"out_dir={tmp_path / 'eager'}"])))
    torch._dynamo.reset()
    monkeypatch.setattr(RunLog, "step", counting)
    monkeypatch.setattr(RunLog, "accumulate", watching)
    monkeypatch.setattr(pretrain, "Step", Built)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    monkeypatch.setattr("train.step.compile_options", lambda mode: {"backend": "aot_eager"})
    compiled_dir = train(load_config(None, [*SMALL, "compile=reduce-overhead", f"out_dir={tmp_path / 'compiled'}"]))
    compiled = losses(compiled_dir)
    assert len(eager) == len(compiled) == STEPS
    assert eager[-1] < eager[0] - 0.5  # the run learns: the comparison is not of constants
    torch.testing.assert_close(compiled, eager, rtol=1e-2, atol=0)  # decomposed ops round otherwise: 0.2 % by the last step
    assert graphs[0] >= 2  # dynamo graphs: forward (its backward by AOTAutograd), update
    assert graphs[1] == graphs[-1], f"recompiled after step 2: graphs per step {graphs}"
    assert len(marks) == earlier.steps == STEPS and earlier.written == [], earlier.written[:3]
    optimizer, update = built["optimizer"], built["step"].update
    state = {id(p): (s["momentum_buffer"], s["momentum_buffer"].data_ptr()) for p, s in optimizer.state.items()}
    assert state == built["state"] and all(b.abs().sum() > 0 for b, _ in state.values())  # the same, updated
    assert all(t._dynamo_static_input_type for t in [update.tau, *(g["lr"] for g in optimizer.param_groups),
                                                     *(b for b, _ in state.values())])
    saved = torch.load(compiled_dir / "last.pt", weights_only=True)
    assert saved["step"] == STEPS and all(torch.isfinite(v).all() for v in saved["model"].values()
                                       if v.is_floating_point())


def test_zeroing_gradients_in_place_writes_an_earlier_steps_outputs():
    """The check above catches the step it replaced: gradients kept at their addresses and zeroed in place
    (``zero_grad(set_to_none=False)``) are the last step's backward outputs written by the next step, the
    "accessing tensor output of CUDAGraphs that has been overwritten" of a GPU run (pytorch#169545)."""
    from helpers import small_heads, tiny_backbone
    from train.model import build_siamese

    model = build_siamese(tiny_backbone(), small_heads()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    views = {"global": [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]}
    earlier = EarlierOutputs()
    for _ in range(2):
        out = model(views)
        optimizer.zero_grad(set_to_none=False)
        out["loss"].backward()
        optimizer.step()
        earlier.after_step(out, model)
    assert "step 0: backbone.conv1.weight.grad" in earlier.written


def test_inductor_compiles_a_one_level_step_and_saves_its_compile_cache(tmp_path, monkeypatch, capsys):
    """compile=default as a GPU run has it, Inductor included, on a one-level model: compiled, its loss (1.0 x L
    beside L's logged value) once came out of the graph without grad_fn and the first backward failed. SimSiam
    with SGD (a CIFAR release's) keeps the graphs small: no target network, no EMA. With $LADDER_ZOO_COMPILE_CACHE
    the run saves Inductor's cache under its stack's folder; the next run of that stack loads it, a damaged file
    costs a message, and a cache of another stack is never read."""
    from train.step import CompileCache, stack_key

    simsiam = [*SMALL, "method.base=simsiam", "method.levels=- - - G", "method.proj_layers=2", "method.proj_out=32",
               "method.pred_hidden=16", "optim.name=sgd", "optim.lr=0.05", "epochs=1", "name=simsiam_tiny"]
    eager = losses(train(load_config(None, [*simsiam, f"out_dir={tmp_path / 'eager'}"])))
    torch._dynamo.reset()
    monkeypatch.setenv("LADDER_ZOO_COMPILE_CACHE", str(tmp_path / "cache"))
    compiled = losses(train(load_config(None, [*simsiam, "compile=default", f"out_dir={tmp_path / 'compiled'}"])))
    assert len(compiled) == TINY_EPOCH_STEPS and torch.isfinite(compiled).all()  # its one epoch
    # the first step's loss, of the same weights, differs by float32 rounding only (later ones drift apart: SimSiam
    # with tiny heads amplifies the rounding of kernels fused otherwise)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-6)

    cpu = torch.device("cpu")
    folder = tmp_path / "cache" / stack_key(cpu)
    assert [p.name for p in folder.iterdir()] == ["simsiam_tiny.default.bin"] and "torch" in folder.name
    (tmp_path / "cache" / "NVIDIA_H200-torch0-triton0").mkdir()
    (tmp_path / "cache" / "NVIDIA_H200-torch0-triton0" / "x.default.bin").write_bytes(b"another stack's")
    again = CompileCache(tmp_path / "cache", "simsiam_tiny.default", cpu)
    assert again.loaded == ["simsiam_tiny.default.bin"] and again.save() is None  # loaded: not written over
    (folder / "damaged.bin").write_bytes(b"not a cache")
    assert CompileCache(tmp_path / "cache", "x", cpu).loaded == ["simsiam_tiny.default.bin"]
    assert "damaged.bin not loaded" in capsys.readouterr().err


def test_ladder_models_compile_as_one_graph():
    """Every level's heads and losses, global and dense, in one graph, its backward too (fullgraph: a break is an
    error), equal to eager; traced by Dynamo and AOTAutograd (Inductor's code generation is the test above's)."""
    from helpers import small_heads, tiny_backbone
    from train.model import build_siamese

    model = build_siamese(tiny_backbone(), small_heads(levels="D D G G")).train()
    views = {"global": [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]}
    eager = model(views)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(views)
    compiled["loss"].backward()
    assert model.backbone.conv1.weight.grad is not None
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-6)


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


def test_sgd_state_exists_before_the_first_step_and_takes_sgds_steps():
    """As LARS's: a step captured as a CUDA graph must read SGD's momentum buffers, not create them; the zero
    buffers take torch's SGD steps exactly (0.9 x 0 + g is its clone of g)."""
    from train.config import OptimConfig
    from train.optim import build_optimizer

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())
    optimizer = build_optimizer(ours, OptimConfig(name="sgd", lr=0.1, weight_decay=1e-3, exclude_bias_norm=False), [])
    reference = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    buffers = [optimizer.state[p]["momentum_buffer"] for p in ours.parameters()]
    assert all(torch.equal(b, torch.zeros_like(b)) for b in buffers)
    for step in range(3):
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    assert all(optimizer.state[p]["momentum_buffer"] is b for p, b in zip(ours.parameters(), buffers))  # in place
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
