"""Recipe configs: dataclasses with defaults, one YAML per recipe, ``key=value`` overrides.

    cfg = load_config("train/configs/ladder_byol_r18_cifar_cifar10_200ep.yaml", ["optim.lr=0.5", "epochs=1"])

A recipe states what differs from the reference it follows: ``_base_`` names the base file(s) it builds on,
relative to its own folder, as mmengine's and detectron2's configs do (``train/configs/base/``: one per reference,
the why in its comments). Bases merge in order, each over the ones before it, the recipe's own keys last; a
section (``data``, ``data.augment``, ``method``, ``optim``) merges key by key, any other value replaces the base's.
A zoo model's recipe trains its method: ``method.base``, ``method.levels`` and ``method.views`` default to the
method's row in ``ladder_zoo.models.METHODS``. ``python -m train.pretrain --config R --print-config`` prints a
recipe resolved. An unknown or misspelled key, in the YAML or an override, is an error naming the close valid keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

RECIPES = Path(__file__).resolve().parent / "configs"  # one YAML per declared tag: <architecture>_<tag>.yaml


def recipe_file(name: str) -> Path:
    """The recipe YAML named ``name`` (it may not exist: check ``is_file()``)."""
    return RECIPES / f"{name}.yaml"


@dataclass
class AugmentConfig:
    """BYOL's augmentation; per-view probabilities are (view 1, view 2), as in the BYOL paper's table."""

    crop_scale: Tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction of the global views
    interpolation: str = "bicubic"  # crop resize: bicubic (BYOL, MULAN) | bilinear (SimSiam, torchvision's default)
    flip_p: float = 0.5  # horizontal flip
    jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8  # probability of the colour jitter
    gray_p: float = 0.2  # grayscale
    blur_p: Tuple[float, float] = (1.0, 0.1)  # Gaussian blur, per global view (0, 0: no blur kernels at all)
    blur_sigma: Tuple[float, float] = (0.1, 2.0)  # its sigma, uniform in this range
    solarize_p: Tuple[float, float] = (0.0, 0.2)  # solarization (pixels >= 0.5 inverted), per global view

    # multi-task views (MULAN defaults): local crops and the cutout view
    global_scale_mt: Tuple[float, float] = (0.25, 1.0)  # global crop scale when local views are used
    local_size: int = 96  # local view size (pixels)
    local_scale: Tuple[float, float] = (0.08, 0.25)  # local crop area fraction
    local_blur_p: float = 0.5  # blur of the local views
    cutout_blur_p: float = 0.5  # blur of the cutout view
    cutout_area: Tuple[float, float] = (0.2, 0.4)  # MULAN main.py's --cutout-range default
    cutout_ratio: Tuple[float, float] = (0.75, 4 / 3)  # the cutout block's aspect ratio


@dataclass
class DataConfig:
    path: str = "data/cifar10"  # ImageFolder root (class folders), or a .tar / .tar.gz holding one
    split: str = "train"  # sub-folder of path holding the class folders ("" when path is the split itself)
    pipeline: str = "gpu"  # gpu: batched per-sample augmentation on the device; cpu: torchvision.transforms.v2
    in_memory: bool = False  # gpu pipeline: decode the whole set once into a uint8 tensor (small sets)
    workers: int = 8  # DataLoader workers per process, capped at the CPUs the process has
    image_size: int = 224  # global crop size
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)  # normalisation, 0-1 pixels: the weights' pretrained_cfg
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)  # likewise
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    allow_changed: bool = False  # resume on a file list that changed since the checkpoint (else an error)


@dataclass
class MethodConfig:
    base: str = "byol"  # byol | simsiam (train/model.py: BYOL, SimSiam); a zoo model: its method's (METHODS)
    levels: str = "- - - G"  # G global, D dense, - off per ladder level (res2..res5, 4 stages, ViT depth quarters),
    #                          or named "res3:G res5:G" / "blocks.3:D blocks.11:G", or "ladder" (levels.py);
    #                          a zoo model: its method's
    ladder_w: float = 0.5  # w of Eq. 6, w_i = 2^(i-N) w: 0.5 gives the paper's 1/16, 1/8, 1/4, 1
    proj_hidden: Optional[int] = None  # projector hidden width; None: the base method's (train/model.py)
    proj_layers: Optional[int] = None  # Linear layers of the projector; None: the base method's
    proj_out: Optional[int] = None  # projection width; None: the base method's
    pred_hidden: Optional[int] = None  # predictor hidden width; None: the base method's
    dense_hidden: int = 512  # D levels: hidden width of the 1x1-conv heads
    dense_out: int = 128  # D levels: their output width
    dense_block_elements: int = 1 << 26  # similarity elements computed at once by the dense alignment
    views: Dict[str, int] = field(default_factory=lambda: {"global": 2})  # global / local / cutout counts; a zoo
    #                                                                          model: its method's
    task_weights: Optional[Dict[str, float]] = None  # per view type; None: the base method's (MULAN's published)
    per_view_predictor: bool = True  # multi-task: one predictor per view type (MULAN); False shares one
    tau: float = 0.996  # BYOL: EMA rate, from tau to tau_end by a cosine over training
    tau_end: float = 1.0  # the EMA rate at the end (tau_end = tau: constant, as lightly's CIFAR-10 benchmark)
    stop_gradient: bool = True  # SimSiam ablation: False lets gradients through the target branch (collapses)


@dataclass
class OptimConfig:
    name: str = "lars"  # lars | sgd | adamw
    lr: float = 7.2  # peak learning rate at batch ref_batch (and min_lr with it)
    ref_batch: Optional[int] = None  # the global batch the reference publishes lr for; None: lr as is, any batch
    lr_scaling: str = "linear"  # how lr follows batch_size / ref_batch: linear (BYOL, SimSiam, MULAN) | sqrt | none
    weight_decay: float = 1e-6  # on weights; biases, norms and tokens excluded (below)
    weight_decay_end: Optional[float] = None  # cosine from weight_decay to this over training; None: constant
    momentum: float = 0.9  # lars, sgd
    betas: Tuple[float, float] = (0.9, 0.999)  # adamw
    eta: float = 0.001  # LARS trust coefficient
    clip_lars_lr: bool = False  # layer rate min(eta ||w|| / (||g|| + wd ||w||), lr), solo-learn's clip_lars_lr
    exclude_bias_norm: bool = True  # bias and norm parameters: no weight decay, no LARS adaptation
    exclude_tokens: bool = True  # the backbone's no_weight_decay() (position embeddings, class / register tokens,
    #                              Swin's relative position tables): no weight decay
    clip_grad: Optional[float] = None  # clip the global gradient norm of the trained parameters to this; None: off
    warmup_epochs: float = 10.0  # linear warmup from 0, then a cosine to min_lr
    min_lr: float = 0.0  # the cosine's floor, at ref_batch as lr
    fixed_predictor_lr: bool = False  # SimSiam: predictors keep the peak lr (no warmup, no decay)


@dataclass
class Config:
    name: str = "run"  # the run's name: its folder runs/{name}, and which recipe a release comes from
    model: str = "byol_r50"  # zoo or timm name of the backbone (a timm model with feature_info)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # timm create_model arguments, e.g. drop_path_rate
    epochs: int = 200  # the schedules' length (lr, weight decay, EMA tau)
    batch_size: int = 4096  # global, over all processes
    max_steps: Optional[int] = None  # stop after this many steps, keeping the schedule of `epochs`
    seed: int = 0  # model init and every draw of the data pipeline, a function of (seed, step)
    device: str = "auto"  # auto (cuda when available) | cuda | cpu
    amp: str = "bf16"  # bf16 | none
    channels_last: bool = True  # NHWC activations (faster convolutions under bf16 on GPUs)
    compile: Any = "none"  # none (eager) | default | max-autotune | reduce-overhead: train/step.py; true/false: default/none
    sync_bn: bool = True  # BatchNorm statistics over all processes (SyncBatchNorm; gloo: a CPU twin)
    out_dir: str = "runs/{name}"  # checkpoints, config.yaml, log.jsonl, tb/
    resume: str = "auto"  # auto: continue from out_dir/last.pt if it exists; none; or a checkpoint path
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 2  # last.pt plus the newest step-XXXXXXX.pt; a corrupt last.pt falls back on them
    log_every: int = 50  # steps
    tensorboard: bool = True  # also log to out_dir/tb
    progress: bool = True  # a progress bar on the main process (stderr to a file: a status line per log window)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        from .compile_modes import compile_mode

        self.compile = compile_mode(self.compile)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir.format(name=self.name))


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """A Config from a recipe YAML (or the defaults) with ``key=value`` overrides (dotted keys, YAML values)."""
    raw = read_recipe(path, overrides)
    _method_of_model(raw)
    return check(_build(Config, raw, ""))


BASE_KEY = "_base_"


def read_recipe(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The keys a recipe sets, its bases' included, with ``key=value`` overrides over them, as nested dicts: what
    ``load_config`` builds a Config from, without the defaults. Plain YAML (no torch): examples/gpu reads it."""
    raw = _resolve(Path(path), ()) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override '{item}' is not key=value (e.g. optim.lr=0.5)")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override '{item}': '{part}' is not a section")
        # key= sets the empty string; "- - - G" (the ladder's level notation) is text, not a YAML block list
        node[leaf] = yaml.safe_load(value) if value.strip() and not value.lstrip().startswith("- ") else value.strip()
    return raw


def _resolve(path: Path, chain: Tuple[Path, ...]) -> Dict[str, Any]:
    """``path``'s keys over its ``_base_`` files' (``chain``: the files that named it, to find a cycle)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(path):], path))
        raise ValueError(f"{chain[0]}: its {BASE_KEY} files name each other in a cycle ({cycle}); break it")
    if not path.is_file() and chain:
        raise FileNotFoundError(f"{chain[-1]}: its {BASE_KEY} {path.name} is no file ({path}); name a base relative to "
                                "the recipe's own folder")
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path}: no such file (train/configs/ holds the zoo's recipes)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a mapping of keys to values")
    bases = raw.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: {BASE_KEY} takes a file name or a list of them, e.g. {BASE_KEY}: base/cifar10.yaml")
    merged: Dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _resolve(path.parent / base, (*chain, path)), Config)
    return _merge(merged, raw, Config)


def _merge(base: Dict[str, Any], over: Dict[str, Any], cls: type) -> Dict[str, Any]:
    """``over`` on ``base``: a section of ``cls`` (a dataclass field) merges key by key, any other value replaces."""
    hints = typing.get_type_hints(cls)
    merged = dict(base)
    for key, value in over.items():
        section = hints.get(key)
        if dataclasses.is_dataclass(section) and isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value, section)
        merged[key] = value
    return merged


def _method_of_model(raw: Dict[str, Any]) -> None:
    """A zoo model trains its method (``ladder_zoo.models.METHODS``): its base, levels and views, unless set."""
    from ladder_zoo.models import METHODS, MODELS

    model, section = raw.get("model", Config.model), raw.setdefault("method", {})
    if model in MODELS and isinstance(section, dict):
        method = METHODS[MODELS[model].method]
        for key, value in (("base", method.base), ("levels", method.levels), ("views", dict(method.views))):
            section.setdefault(key, value)


def config_from_dict(raw: Dict[str, Any]) -> Config:
    """The Config a checkpoint recorded (``to_dict`` output), validated like a recipe."""
    return _build(Config, raw, "")


# (key, test, what it must be): every numeric or choice setting, checked when the recipe is loaded, before any
# data is read, so that a bad value is one line naming the key instead of a traceback (or a run that trains
# nothing) minutes later.
def _probability(v):
    return 0.0 <= v <= 1.0


def _interval(lo, hi):
    return lambda v: lo <= v[0] <= v[1] <= hi


_CHECKS = [
    ("epochs", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1 (the global batch, over all processes)"),
    ("max_steps", lambda v: v is None or v >= 1, "an integer >= 1, or null for the whole schedule"),
    ("seed", lambda v: v >= 0, "an integer >= 0"),
    ("device", lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "auto, cpu, cuda or cuda:N"),
    ("amp", lambda v: v in ("bf16", "none"), "bf16 or none (fp16 needs a loss scaler this code does not have)"),
    ("resume", lambda v: v != "", "auto, none or a checkpoint path"),
    ("checkpoint_every", lambda v: v >= 1, "an integer >= 1 (steps)"),
    ("log_every", lambda v: v >= 1, "an integer >= 1 (steps)"),
    ("keep_checkpoints", lambda v: v >= 1, "an integer >= 1 (last.pt and the newest older ones)"),
    ("data.path", lambda v: v != "", "the ImageFolder root, or a .tar / .tar.gz holding one"),
    ("data.pipeline", lambda v: v in ("gpu", "cpu"), "gpu or cpu"),
    ("data.workers", lambda v: v >= 0, "an integer >= 0"),
    ("data.image_size", lambda v: v >= 8, "an integer >= 8 (pixels)"),
    ("data.mean", lambda v: all(0.0 <= x <= 1.0 for x in v), "3 values in [0, 1] (pixel scale 0-1)"),
    ("data.std", lambda v: all(x > 0 for x in v), "3 values > 0"),
    ("data.augment.crop_scale", _interval(1e-6, 1.0), "(min, max) with 0 < min <= max <= 1"),
    ("data.augment.interpolation", lambda v: v in ("bicubic", "bilinear"), "bicubic or bilinear"),
    ("data.augment.flip_p", _probability, "a probability in [0, 1]"),
    ("data.augment.jitter", lambda v: min(v) >= 0 and v[3] <= 0.5, "4 strengths >= 0, hue <= 0.5"),
    ("data.augment.jitter_p", _probability, "a probability in [0, 1]"),
    ("data.augment.gray_p", _probability, "a probability in [0, 1]"),
    ("data.augment.blur_p", lambda v: all(map(_probability, v)), "2 probabilities in [0, 1]"),
    ("data.augment.blur_sigma", _interval(1e-6, float("inf")), "(min, max) with 0 < min <= max"),
    ("data.augment.solarize_p", lambda v: all(map(_probability, v)), "2 probabilities in [0, 1]"),
    ("data.augment.global_scale_mt", _interval(1e-6, 1.0), "(min, max) with 0 < min <= max <= 1"),
    ("data.augment.local_size", lambda v: v >= 4, "an integer >= 4 (pixels)"),
    ("data.augment.local_scale", _interval(1e-6, 1.0), "(min, max) with 0 < min <= max <= 1"),
    ("data.augment.local_blur_p", _probability, "a probability in [0, 1]"),
    ("data.augment.cutout_blur_p", _probability, "a probability in [0, 1]"),
    ("data.augment.cutout_area", lambda v: 0 < v[0] <= v[1] < 1, "(min, max) with 0 < min <= max < 1"),
    ("data.augment.cutout_ratio", _interval(1e-6, float("inf")), "(min, max) with 0 < min <= max"),
    ("method.base", lambda v: v in ("byol", "simsiam"), "byol or simsiam"),
    ("method.ladder_w", lambda v: v > 0, "a number > 0"),
    ("model_kwargs", lambda v: all(k not in ("num_classes", "features_only", "pretrained") for k in v),
     "timm create_model arguments other than num_classes / features_only / pretrained (train sets those)"),
    ("method.proj_hidden", lambda v: v is None or v >= 1, "an integer >= 1, or null for the method's"),
    ("method.proj_layers", lambda v: v is None or v >= 2, "an integer >= 2 (Linear layers), or null for the method's"),
    ("method.proj_out", lambda v: v is None or v >= 1, "an integer >= 1, or null for the method's"),
    ("method.pred_hidden", lambda v: v is None or v >= 1, "an integer >= 1, or null for the method's"),
    ("method.dense_hidden", lambda v: v >= 1, "an integer >= 1"),
    ("method.dense_out", lambda v: v >= 1, "an integer >= 1"),
    ("method.dense_block_elements", lambda v: v >= 1, "an integer >= 1"),
    ("method.views", lambda v: all(n >= 0 for n in v.values()), "view counts >= 0"),
    ("method.task_weights", lambda v: v is None or all(w >= 0 for w in v.values()), "weights >= 0, or null"),
    ("method.tau", _probability, "an EMA rate in [0, 1]"),
    ("method.tau_end", _probability, "an EMA rate in [0, 1]"),
    ("optim.name", lambda v: v in ("lars", "sgd", "adamw"), "lars, sgd or adamw"),
    ("optim.lr", lambda v: v > 0, "a number > 0"),
    ("optim.ref_batch", lambda v: v is None or v >= 1, "an integer >= 1, or null to use lr as is"),
    ("optim.lr_scaling", lambda v: v in ("linear", "sqrt", "none"), "linear, sqrt or none"),
    ("optim.weight_decay", lambda v: v >= 0, "a number >= 0"),
    ("optim.weight_decay_end", lambda v: v is None or v >= 0, "a number >= 0, or null for a constant weight decay"),
    ("optim.clip_grad", lambda v: v is None or v > 0, "a gradient norm > 0, or null for no clipping"),
    ("optim.momentum", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("optim.betas", lambda v: all(0 <= b < 1 for b in v), "2 numbers in [0, 1)"),
    ("optim.eta", lambda v: v > 0, "a number > 0"),
    ("optim.warmup_epochs", lambda v: v >= 0, "a number >= 0"),
    ("optim.min_lr", lambda v: v >= 0, "a number >= 0"),
]


def check(cfg: Config) -> Config:
    """Range-check every setting (``_CHECKS``) and the few that depend on each other; returns ``cfg``."""
    for key, test, expected in _CHECKS:
        value = _get(cfg, key)
        if not test(value):
            raise ValueError(f"{key}={value!r} is not valid: it takes {expected}")
    if cfg.optim.warmup_epochs > cfg.epochs:
        raise ValueError(f"optim.warmup_epochs={cfg.optim.warmup_epochs} is longer than epochs={cfg.epochs}: "
                         "shorten the warmup or train longer")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ValueError(f"optim.min_lr={cfg.optim.min_lr} is above optim.lr={cfg.optim.lr}: the cosine decays "
                         "from lr to min_lr")
    return cfg


def check_paths(cfg: Config) -> None:
    """What a run reads from disk exists: ``data.path`` and a ``resume`` checkpoint (a file, or a run folder
    holding ``last.pt``). Called before any model is built or image decoded."""
    if not Path(cfg.data.path).exists():
        raise FileNotFoundError(f"data.path={cfg.data.path}: no such file or folder. Give the ImageFolder root (class "
                                "folders under data.split) or a .tar / .tar.gz holding one")
    if cfg.resume in ("auto", "none"):
        return
    from .checkpoint import LAST  # the run folder's newest checkpoint (checkpoint.py imports this module)

    path = Path(cfg.resume)
    if path.is_dir() and not (path / LAST).is_file():
        raise FileNotFoundError(f"resume={cfg.resume}: the folder holds no checkpoint ({LAST}). Name a checkpoint "
                                "file or a run folder that has one, or use resume=auto / resume=none")
    if not path.exists():
        raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint. Name a checkpoint file or a run folder, "
                                "or use resume=auto / resume=none")


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain dict of a config (lists for tuples), as written into checkpoints and logs."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, raw: Dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            close += [n for n in names if n not in close and _also_meant(key, n)]
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ValueError(f"unknown config key '{prefix}{key}'{hint} Valid keys here: {', '.join(names)}.")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _also_meant(key: str, name: str) -> bool:
    """What spelling distance misses: an abbreviation (learning_rate: lr, wd: weight_decay), a qualified name
    (base_lr: lr), the same words in another order (lr_min: min_lr)."""
    words, initials = key.split("_"), lambda text: "".join(w[:1] for w in text.split("_"))
    return name in (initials(key), *words) or key == initials(name) or sorted(words) == sorted(name.split("_"))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"config key '{key}' is a section; give it a mapping")
        return _build(tp, value, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"config key '{key}' takes {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key '{key}' takes a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ValueError(f"config key '{key}' takes a {tp.__name__}, got {value!r}")
    return value


def reference_markdown() -> str:
    """docs/training.md's config reference: every key, its default and the comment beside it in this file."""
    rows = ["| key | default | what |", "|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        comments = _field_comments(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
                continue
            value = _plain(default)
            shown = "null" if value is None else str(value).replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | `{shown}` | {comments.get(f.name, '').replace('|', '/')} |")

    walk(Config, "")
    return "\n".join(rows) + "\n"


def _field_comments(cls: type) -> Dict[str, str]:
    """{field: the comment on its line and the comment lines below it, indented under it} from the class's source;
    a comment line with one space after its ``#`` heads the fields below it and belongs to none."""
    comments: Dict[str, str] = {}
    last = None
    for line in inspect.getsource(cls).splitlines()[1:]:
        field_line = re.match(r"\s+(\w+): [^#]*?(?:#\s*(.*))?$", line)
        if field_line and not line.strip().startswith("#"):
            last = field_line.group(1)
            comments[last] = (field_line.group(2) or "").strip()
        elif line.strip().startswith("#  ") and last:
            comments[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    return comments


__all__ = ["AugmentConfig", "Config", "DataConfig", "MethodConfig", "OptimConfig", "check", "check_paths", "config_from_dict", "load_config",
           "read_recipe", "to_dict"]


if __name__ == "__main__":  # python -m train.config: the config reference of docs/training.md
    print(reference_markdown(), end="")
