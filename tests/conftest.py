"""Fixtures: the committed CIFAR-10 sample and a Hub served on 127.0.0.1 (helpers live in helpers.py)."""
from __future__ import annotations

import json

import pytest

from helpers import SAMPLE, make_release
from hub_server import LocalHub


@pytest.fixture
def hub_server():
    with LocalHub() as hub:
        yield hub


@pytest.fixture(scope="session")
def sample_images():
    """Real CIFAR-10 test JPEGs, a few per class."""
    return sorted(SAMPLE.glob("test/*/*.jpg"))


@pytest.fixture
def isolated_hub(monkeypatch, tmp_path):
    """An empty release record and an empty local Hub root, by the package's own configuration
    (``LADDER_ZOO_RELEASES``, ``LADDER_ZOO_HUB_DIR``): the test publishes what it needs.

    Returns ``publish(arch, tag, seed=0, **write_kwargs) -> state dict``: writes the tag in Hub layout under the
    local Hub root and records its sha256s, as a release would.
    """
    from ladder_zoo import hub

    record = tmp_path / "releases.json"
    record.write_text("{}")
    monkeypatch.setenv(hub.RELEASES_ENV, str(record))
    monkeypatch.setenv(hub.HUB_DIR_ENV, str(tmp_path / "hub"))

    def publish(arch, tag, seed=0, **kwargs):
        repo, _, entry, state = make_release(tmp_path / "hub", arch, tag, seed=seed, **kwargs)
        record.write_text(json.dumps({**json.loads(record.read_text()), repo: entry}))
        return state

    return publish
