"""The package as users install it: a wheel of this checkout's package, installed outside the checkout, knows only
what it carries. The release record inside it lists and describes the released tags; their weights load from a Hub
(served on 127.0.0.1) or from a checkout's hub/ that LADDER_ZOO_HUB_DIR names, and from no folder the package
merely sits beside. The wheel's dependencies are the test environment's own (pip --no-deps --target)."""
import json
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest

import ladder_zoo
from helpers import ROOT, environ_without_hub
from hub_server import LocalHub
from ladder_zoo import hub

NAME, TAG = "byol_r18_cifar", "cifar10_200ep"
RELEASED = f"{NAME}.{TAG}"  # this project's release, its files in the checkout's hub/
REPO = hub.repo_id(NAME, TAG)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The folder the wheel is installed in. The wheel is built from a copy of the files a build reads (the package,
    pyproject.toml, README.md, LICENSE): an in-tree build would leave build/ and ladder_zoo.egg-info in the checkout."""
    if int(version("setuptools").split(".")[0]) < 77:
        pytest.skip("building the wheel offline needs setuptools >= 77 (pyproject's license-files): pip install '.[test]'")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "ladder_zoo", source / "ladder_zoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for command in (["wheel", "--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir", str(work / "dist"),
                     str(source)],
                    ["install", "--no-deps", "--no-index", "--target", str(work / "site"), "--find-links",
                     str(work / "dist"), "ladder-zoo"]):
        done = subprocess.run([*PIP, *command], capture_output=True, text=True, timeout=300, cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
    # a hub/ folder beside the installed package (another distribution's, say) holding the release: a package that
    # looked for weights beside itself, not only where a setting says, would load them from it
    (work / "site" / "hub").symlink_to(ROOT / "hub")
    return work / "site"


# What the installed package says of itself, in a fresh interpreter outside the checkout: its `ladder-zoo list` and
# `info`; the released tag's weights (the sum of every tensor) from the Hub at HF_ENDPOINT; its local Hub roots with
# LADDER_ZOO_HUB_DIR unset, then set to HUB_DIR, and where the tag's weights are found then (a fresh Hub cache).
REPORT = f"""
    import contextlib, io, json, os, sys
    import ladder_zoo
    from ladder_zoo import cli, hub

    def printed(*argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli.main(list(argv))
        return out.getvalue()

    def weights(**kwargs):
        model = ladder_zoo.create_model("{RELEASED}", pretrained=True, **kwargs)
        return float(sum(t.double().sum() for t in model.state_dict().values()))

    report = {{"package": ladder_zoo.__file__, "checkout": hub.source_checkout(), "list": printed("list", "--pretrained"),
              "info": printed("info", "{RELEASED}"), "hub_weights": weights(), "roots": list(map(str, hub.local_hub_roots()))}}
    os.environ["LADDER_ZOO_HUB_DIR"] = os.environ["HUB_DIR"]
    fresh = os.path.join(os.environ["HF_HUB_CACHE"], "..", "fresh-cache")
    report["named"] = str(hub.resolve_weights("{NAME}", "{TAG}", cache_dir=fresh))
    report["named_weights"] = weights(cache_dir=fresh)
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(installed):
    """REPORT of the installed package, a Hub serving the release on 127.0.0.1; ``hub_requests``: the weights' GETs."""
    env = {**environ_without_hub(), "PYTHONPATH": str(installed), "HF_HUB_CACHE": str(installed.parent / "hf-cache"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HUB_DIR": str(ROOT / "hub")}
    with LocalHub() as served:
        served.commit(REPO, {p.name: p.read_bytes() for p in (ROOT / "hub" / REPO).iterdir()})
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(REPORT)], capture_output=True, text=True,
                              env={**env, "HF_ENDPOINT": served.endpoint}, cwd=installed.parent, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return {**json.loads(done.stdout.splitlines()[-1]), "hub_requests": served.count("GET", "/lfs/")}


def released_weights() -> float:
    model = ladder_zoo.create_model(NAME, checkpoint_path=ROOT / "hub" / REPO)
    return float(sum(t.double().sum() for t in model.state_dict().values()))


def test_a_source_checkout_is_found_by_its_pyproject():
    assert hub.source_checkout() == ROOT and hub.checkout_hub_dir() == ROOT / "hub"


def test_the_installed_package_is_no_checkout(installed, report):
    assert report["package"].startswith(str(installed)) and report["checkout"] is None
    assert "from ladder_zoo.cli import main" in (installed / "bin" / "ladder-zoo").read_text()  # the command


def test_installed_list_and_info_read_the_record_inside_the_package(report):
    assert RELEASED in report["list"].split()
    info = report["info"]
    assert "weights: released\n  no copy here" in info and f"recipe: train/configs/{NAME}_{TAG}.yaml" in info
    assert "evaluation: CIFAR-10 test split" in info


def test_installed_package_loads_the_release_from_the_hub(report):
    assert report["hub_requests"] == 1  # not from the hub/ folder beside the package
    assert report["hub_weights"] == released_weights()  # the released ones (the loader checks their sha256 too)


def test_installed_package_reads_only_the_hub_folder_its_setting_names(report):
    assert report["roots"] == []
    assert report["named"].startswith(str(ROOT / "hub" / REPO))
    assert report["named_weights"] == released_weights()
