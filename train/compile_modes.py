"""The recipe's ``compile`` modes and the ``torch.compile`` options of each (what each compiles: ``train/step.py``).
No torch here: a recipe's mode is checked where the recipe loads (``config.py``) without importing it."""
from typing import Any, Dict

COMPILE_MODES: Dict[str, Any] = {
    "none": None, "default": "default", "max-autotune": "max-autotune-no-cudagraphs",
    "reduce-overhead": "reduce-overhead",
}


def compile_mode(value: Any) -> str:
    """The mode named by a recipe's ``compile`` (booleans of older recipes included)."""
    if isinstance(value, bool):
        return "default" if value else "none"
    if value not in COMPILE_MODES:
        raise ValueError(f"compile={value!r}: choose one of {', '.join(COMPILE_MODES)}")
    return value


def compile_options(mode: str) -> Dict[str, Any]:
    """``torch.compile`` keyword arguments of a mode other than none."""
    return {"mode": COMPILE_MODES[compile_mode(mode)]}
