"""Fixtures: the committed CIFAR-10 sample and a Hub served on 127.0.0.1 (helpers live in helpers.py)."""
from __future__ import annotations

import pytest

from helpers import SAMPLE
from hub_server import LocalHub


@pytest.fixture
def hub_server():
    with LocalHub() as hub:
        yield hub


@pytest.fixture(scope="session")
def sample_images():
    """Real CIFAR-10 test JPEGs, a few per class."""
    return sorted(SAMPLE.glob("test/*/*.jpg"))
