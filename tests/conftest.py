"""Fixtures: the committed CIFAR-10 sample and a Hub served on 127.0.0.1 (helpers live in helpers.py)."""
from __future__ import annotations

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
    """No releases on record, no checkout hub/ copies, no LADDER_ZOO_HUB_DIR: the test publishes what it needs.

    Returns ``publish(arch, tag, seed=0, **write_kwargs) -> state dict``: writes the tag in Hub layout under a
    LADDER_ZOO_HUB_DIR folder and records its sha256s, as a release would.
    """
    from ladder_zoo import hub

    from timm.models import _registry

    from ladder_zoo.models import default_cfgs

    records = {}
    monkeypatch.setattr(hub, "CHECKOUT_HUB_DIR", tmp_path / "no-checkout-hub")
    monkeypatch.setattr(hub, "releases", lambda: records)
    # the tags released at import time (ladder_zoo/releases.json) carry the Hub id in their registered cfgs
    registered = [*_registry._model_pretrained_cfgs.values(), *(c for d in default_cfgs.values() for c in d.cfgs.values())]
    for cfg in registered:
        if (cfg.hf_hub_id or "").startswith(hub.HUB_ORG + "/"):
            monkeypatch.setattr(cfg, "hf_hub_id", None)
    monkeypatch.delenv(hub.HUB_DIR_ENV, raising=False)

    def publish(arch, tag, seed=0, **kwargs):
        repo, _, entry, state = make_release(tmp_path / "hub", arch, tag, seed=seed, **kwargs)
        records[repo] = entry
        monkeypatch.setenv(hub.HUB_DIR_ENV, str(tmp_path / "hub"))
        return state

    return publish
