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
    for command in (["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source)],
                    ["install", "--no-deps", "--no-index", "--target", str(work / "site"), "--find-links",
                     str(work / "dist"), "ladder-zoo"]):
        done = subprocess.run([*PIP, *command], capture_output=True, text=True, timeout=300, cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
    # a hub/ folder beside the installed package (another distribution's, say) holding the release: a package that
    # looked for weights beside itself, not only where a setting says, would load them from it
    (work / "site" / "hub").symlink_to(ROOT / "hub")
    return work / "site"


def run_installed(site, args, env):
    """``args`` (the install's ``ladder-zoo`` command, or python code) in a fresh interpreter outside the checkout
    that imports the installed package, with no HF_* / LADDER_ZOO_* setting but ``env``."""
    base = {**environ_without_hub(), "PYTHONPATH": str(site), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    command = [str(site / "bin" / args[0]), *args[1:]] if isinstance(args, list) else [
        sys.executable, "-c", textwrap.dedent(args)]
    done = subprocess.run(command, env=base, cwd=site.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# python code for run_installed: what the installed package says of itself, `ladder-zoo list --pretrained`, and the
# released tag's weights (the sum of every tensor) or why there are none; then the same with LADDER_ZOO_HUB_DIR set to
# the folder named in HUB_DIR, if any
LOAD = f"""
    import contextlib, io, json, os
    import ladder_zoo
    from ladder_zoo import cli, hub

    def weights():
        try:
            model = ladder_zoo.create_model("{RELEASED}", pretrained=True)
        except ladder_zoo.WeightsNotFoundError as e:
            return str(e)
        return float(sum(t.double().sum() for t in model.state_dict().values()))

    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        cli.main(["list", "--pretrained"])
    out = {{"package": ladder_zoo.__file__, "checkout": hub.source_checkout(), "listed": listed.getvalue().split(),
            "weights": weights()}}
    if os.environ.get("HUB_DIR"):
        os.environ["LADDER_ZOO_HUB_DIR"] = os.environ["HUB_DIR"]
        out["named"] = weights()
    print(json.dumps(out))
"""


def released_weights() -> float:
    model = ladder_zoo.create_model(NAME, checkpoint_path=ROOT / "hub" / REPO)
    return float(sum(t.double().sum() for t in model.state_dict().values()))


def test_a_source_checkout_is_found_by_its_pyproject():
    assert hub.source_checkout() == ROOT and hub.checkout_hub_dir() == ROOT / "hub"


def test_installed_command_describes_the_release_from_its_own_record(installed):
    info = run_installed(installed, ["ladder-zoo", "info", RELEASED], {"HF_HUB_OFFLINE": "1"})
    assert "weights: released\n  no copy here" in info and f"recipe: train/configs/{NAME}_{TAG}.yaml" in info
    assert "evaluation: CIFAR-10 test split" in info


def test_installed_package_loads_the_release_from_the_hub(installed, tmp_path):
    with LocalHub() as served:
        served.commit(REPO, {p.name: p.read_bytes() for p in (ROOT / "hub" / REPO).iterdir()})
        got = json.loads(run_installed(installed, LOAD, {"HF_ENDPOINT": served.endpoint,
                                                         "HF_HUB_CACHE": str(tmp_path / "cache")}))
        assert served.count("GET", "/lfs/") == 1  # the weights came from the served Hub
    assert got["package"].startswith(str(installed)) and got["checkout"] is None
    assert got["weights"] == released_weights()  # the released ones (the loader checks their sha256 too)


def test_installed_package_reads_only_the_hub_folder_its_setting_names(installed, tmp_path):
    got = json.loads(run_installed(installed, LOAD, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"),
                                                     "HUB_DIR": str(ROOT / "hub")}))
    assert RELEASED in got["listed"]  # ladder-zoo list --pretrained: from the record inside the package
    assert "Local Hub folders searched: none (set LADDER_ZOO_HUB_DIR)" in got["weights"]
    assert got["named"] == released_weights()
