"""Fixtures: the committed CIFAR-10 sample and a Hub served on 127.0.0.1 (helpers live in helpers.py); the order and
threads of the parallel run (pytest-xdist, pyproject.toml's addopts)."""
from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from helpers import HUB_VARIABLES, SAMPLE, hub_variables, make_release
from hub_server import LocalHub


# The longest modules first, so that no worker starts one of them last (xdist hands out whole modules in order).
LONGEST_FIRST = ["test_train_step.py", "test_reliability.py", "test_train_runs.py", "test_integrations.py",
                 "test_draw.py"]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's own order is kept


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # one core's share of threads each, not every core for every worker
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture
def hub_server():
    with LocalHub() as hub:
        yield hub


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """``hub_env(env=None, releases=None)``: this process as a fresh interpreter started with ``env`` would see the
    Hub: ``helpers.hub_variables`` and no other HF_* / LADDER_ZOO_* variable (``helpers.run_python``'s setting), and
    huggingface_hub's constants read again from them (it reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE at
    import). Each call starts over; the end restores both."""
    from huggingface_hub import constants

    def enter(env=None, releases=None):
        for key in [k for k in os.environ if k.startswith(HUB_VARIABLES)]:
            monkeypatch.delenv(key)
        for key, value in hub_variables(tmp_path, env, releases).items():
            monkeypatch.setenv(key, value)
        importlib.reload(constants)

    yield enter
    monkeypatch.undo()
    importlib.reload(constants)


@pytest.fixture
def one_thread():
    """torch on one thread, as a worker of the parallel run has it (and the tests' subprocesses, OMP_NUM_THREADS=1):
    sums reduce in one order, so results that depend on it (bit-equal resumes, a compiled run's drift from eager)
    do not change with the machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
