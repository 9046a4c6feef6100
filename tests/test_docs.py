"""README and docs/ tables are generated from the code's tables and the release record, and stay true."""
import re

import pytest

from helpers import ROOT
from ladder_zoo.cli import models_markdown, releases_markdown
from train.config import reference_markdown

BLOCKS = [  # (file, marker, generator, the command that prints it)
    ("README.md", "models", models_markdown, "ladder-zoo list --markdown"),
    ("README.md", "releases", releases_markdown, "ladder-zoo list --pretrained --markdown"),
    ("docs/training.md", "config-reference", reference_markdown, "python -m train.config"),
]


def block(text: str, marker: str) -> str:
    found = re.search(f"<!-- {marker}:start -->\n(.*?)<!-- {marker}:end -->", text, re.S)
    assert found, f"no <!-- {marker}:start/end --> block"
    return found.group(1)


@pytest.mark.parametrize("path, marker, generate, command", BLOCKS, ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_generated_block_is_current(path, marker, generate, command):
    assert block((ROOT / path).read_text(), marker) == generate(), (
        f"{path}'s {marker} block is stale: replace it with the output of `{command}`")


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160  # 150 before the released-weights table listed others' weights
    assert "../shared" not in readme  # this project's machines: docs/development.md
    for doc in re.findall(r"docs/[\w.]+\.md", readme):
        assert (ROOT / doc).is_file(), doc
