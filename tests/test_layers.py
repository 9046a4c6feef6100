"""ladder_zoo is a one-way stack, as timm's (_registry -> _helpers -> _hub -> _builder -> models -> _factory):
every import of a package module, at the top of a file or inside a function, points down it."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ladder_zoo"
# bottom to top; a module may import only modules of lower layers (``__init__`` re-exports from all)
LAYERS = [
    {"version", "errors", "device", "image_files"},
    {"layouts"},
    {"weights"},
    {"hub"},
    {"models"},
    {"factory"},
    {"publish", "integrations._common"},
    {"integrations._mmengine", "integrations.onnx"},
    {"integrations.torchvision", "integrations.detectron2", "integrations.mmdet", "integrations.mmseg"},
    {"cli", "integrations.detectron2_train"},
]
LAYER = {module: i for i, layer in enumerate(LAYERS) for module in layer}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(path: Path):
    """(line, imported package module) for every import of a ladder_zoo module in ``path``."""
    package = _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . / .. / .x import y
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif (node.module or "").startswith("ladder_zoo"):
                target = node.module[len("ladder_zoo"):].lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import hub` imports the module hub
                name = f"{target}.{alias.name}".lstrip(".")
                yield node.lineno, name if name in LAYER else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ladder_zoo."):
                    yield node.lineno, alias.name[len("ladder_zoo."):]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_layer():
    assert {_module(p) for p in MODULES} == set(LAYER)


@pytest.mark.parametrize("path", MODULES, ids=_module)
def test_imports_point_down_the_stack(path):
    own = LAYER[_module(path)]
    upward = [f"line {line}: {target}" for line, target in _imports(path) if LAYER.get(target, -1) >= own]
    assert not upward, f"{_module(path)} (layer {own}) imports up or sideways: {upward}"


def test_init_only_reexports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Assign"}, kinds  # docstring, imports, __all__
