"""Reading weight files: safetensors (single or sharded), Hub-layout folders, torch checkpoints, all as data.

Where a file comes from (explicit path, Hub, local Hub folder, a URL) is ``hub.py``'s business, and which of its
tensors are the backbone is ``layouts.py``'s; this module turns a local path into the object it holds, with a
one-line error when the file is missing, truncated, corrupt or not data. It knows no zoo name.

Every pickle is read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing that runs
code. Trainers store metadata beside their weights that such a load refuses (mmengine's ``HistoryBuffer`` in
mmselfsup / mmpretrain checkpoints, numpy arrays, omegaconf configs in Lightning ``hyper_parameters``): a global of
one of ``METADATA_MODULES`` is read as an inert ``_Metadata`` object instead (its code never runs, its state is
dropped); any other global (``os.system``, a pickled ``nn.Module``) refuses the file.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import WeightsIntegrityError, WeightsNotFoundError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# Packages whose classes trainers pickle as metadata beside the weights, read as inert placeholders:
# mmengine (message_hub's HistoryBuffer, whose statistics methods pickle as builtins' getattr(buffer, name)), numpy
# (arrays in it; _codecs.encode carries their bytes in protocol 2), Lightning and omegaconf (hyper_parameters;
# copyreg._reconstructor, typing and the builtin types its metadata names rebuild omegaconf's objects).
METADATA_MODULES = ("numpy", "_codecs", "mmengine", "mmcv", "mmpretrain", "mmselfsup", "pytorch_lightning",
                    "lightning", "lightning_fabric", "omegaconf", "copyreg", "typing", "argparse", "pathlib",
                    "collections")
METADATA_BUILTINS = ("getattr", "dict", "list", "object")  # torch's error names a builtin without its module
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # torch's weights_only error names the global it refused

PathLike = Union[str, Path]


class Checkpoint(NamedTuple):
    data: Dict[str, Any]  # what the file holds: a state dict, or a trainer's checkpoint dict
    trained_as: Optional[str]  # the model name the file records (config.json, a checkpoint's model_name / arch)
    path: Path


def read_checkpoint(path: PathLike) -> Checkpoint:
    """The object a weight file or Hub-layout folder holds, and the model name it records.

    Accepts ``model.safetensors``, a sharded ``model.safetensors.index.json``, a folder holding either (its
    ``config.json`` names the model), or a torch checkpoint of any trainer (a dict; read as data, see above).
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME if (path / INDEX_NAME).is_file() else path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"Weight file {path} does not exist.")
    if path.name.endswith(".index.json") or path.suffix == ".safetensors":
        state = _read_sharded(path) if path.name.endswith(".index.json") else _read_safetensors(path)
        config = path.parent / "config.json"
        return Checkpoint(state, config_name(json.loads(config.read_text())) if config.is_file() else None, path)
    raw = torch_load(path)
    if not isinstance(raw, Mapping):
        raise WeightsIntegrityError(f"{path} holds a {type(raw).__name__}, not a state dict or a checkpoint dict.")
    trained_as = next((raw[k] for k in ("model_name", "arch") if isinstance(raw.get(k), str)), None)
    return Checkpoint(dict(raw), trained_as, path)


def read_state_dict(path: PathLike, target: bool = False) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a weight file or any trainer's checkpoint (``layouts.backbone``), keyed as the
    trainer keys them; ``target=True``: its EMA / momentum target instead of the online backbone."""
    from .layouts import backbone

    return backbone(read_checkpoint(path).data, "target" if target else "online").state


def config_name(config: Mapping[str, Any]) -> Optional[str]:
    """The model a Hub folder's config.json names: its ``ladder_zoo.name`` (the zoo name, where ``architecture`` is
    the stock timm one), else its ``architecture``."""
    return (config.get("ladder_zoo") or {}).get("name") or config.get("architecture")


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsIntegrityError(
            f"{path} is not a readable safetensors file ({e}). It is truncated or corrupt: delete it and download "
            "or export it again."
        ) from e


def _read_sharded(index_path: Path) -> Dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise WeightsIntegrityError(f"{index_path} is not a safetensors index (no readable 'weight_map'): {e}.") from e
    state: Dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_read_safetensors(index_path.parent / shard))
    if set(state) != set(weight_map):
        raise WeightsIntegrityError(f"The shards next to {index_path} do not hold exactly the tensors its weight_map lists.")
    return state


class _Metadata:
    """Stands in for a class or function that a checkpoint's metadata names: unpickled from its state without
    running any of its code, and never read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _placeholder(name: str) -> type:
    """A ``_Metadata`` class that torch's weights_only unpickler takes for the global ``name``."""
    module, _, qualname = name.rpartition(".")
    return type(qualname, (_Metadata,), {"__module__": module or "builtins", "__qualname__": qualname})


def torch_load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, trainers' metadata read as placeholders (module docstring), with a
    one-line error naming a missing, truncated or corrupt file, or a global that is not data."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Checkpoint {path} does not exist.")
    placeholders: List[type] = []
    while True:
        try:
            with torch.serialization.safe_globals(placeholders):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            found = _UNSUPPORTED_GLOBAL.search(str(e))
            name = found.group(1) if found else None
            known = {f"{p.__module__}.{p.__qualname__}" for p in placeholders}
            metadata = name in METADATA_BUILTINS or str(name).startswith(tuple(f"{m}." for m in METADATA_MODULES))
            if name is None:  # no global to name: not a torch checkpoint (a plain pickle, a damaged stream)
                raise _unreadable(path, e) from None
            if name in known or not metadata:
                raise WeightsIntegrityError(
                    f"{path} pickles {name}, which is not data: loading it would run code, and weights_only=True "
                    "refuses it. Save the weights as a state dict of tensors (torch.save(model.state_dict(), ...)) "
                    "or safetensors."
                ) from None
            placeholders.append(_placeholder(name))
        except Exception as e:  # torch raises RuntimeError / EOFError / zip errors for truncated or corrupt files
            raise _unreadable(path, e) from e


def _unreadable(path: Path, error: Exception) -> WeightsIntegrityError:
    """One line for a file torch cannot read, naming what torch found without its advice to load with
    weights_only=False (wrong for a corrupt or foreign file, and unsafe)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. |\n|$)", text)
    first = (text.strip().splitlines() or [""])[0].split(". ")[0]
    what = found.group(1) if found else f"{type(error).__name__}: {first}" if first else type(error).__name__
    return WeightsIntegrityError(
        f"{path} is not a readable torch checkpoint ({what}): truncated or corrupt (copy it again), or not a file "
        "of tensors (save a state_dict() with torch.save, or as safetensors)."
    )
