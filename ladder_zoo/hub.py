"""Where pretrained weights come from, and the check that they are the released ones.

Resolution order for ``create_model(name, pretrained=True)``:

1. an explicit file or folder: ``checkpoint_path=...``, ``pretrained_cfg_overlay=dict(file=...)`` or a
   ``local-dir:`` model name. Used as given.
2. the Hugging Face Hub, or its local cache, through ``huggingface_hub.hf_hub_download``: for a published tag
   (one in the release record) and for any ``hf-hub:`` repository. ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
   ``HF_HUB_CACHE``, ``cache_dir=`` and ``revision=`` are honoured as huggingface_hub defines them.
3. a local Hub-layout folder ``ROOT/<repo_id>/`` (``config.json``, ``model.safetensors`` or a sharded
   ``model.safetensors.index.json``, ``README.md``) under each ROOT of the local Hub roots. A pinned
   ``revision`` is only honoured by the Hub and its cache, never by a local folder.

The weights others released (``models.EXTERNAL``: a ``url`` in the pretrained cfg) come from torch.hub's checkpoint
cache, where ``url_weights`` downloads them once (``torch.hub.download_url_to_file``, a progress bar, the sha256
prefix of the file name checked).

Whatever the source, the result is one local file, which ``models.ZooWeights.load_pretrained`` reads (timm's
``custom_load`` hook) and hands to timm's ``load_pretrained`` with the zoo's filter fn (``layouts.py``).

For a published tag, steps 2 and 3 hold the same bytes (each file's sha256 is on record), so a copy already in
the Hub cache or a local folder is used without asking the network: on a machine without network,
huggingface_hub would otherwise retry for about 20 s before step 3 is reached.

Configuration (read when weights are resolved or released tags listed; the release record also once at import, for
timm's registry, which timm builds then):

- ``LADDER_ZOO_RELEASES``: the release record, a JSON file ``{repo_id: {"files": {name: sha256}, "revision":
  commit or null, "evaluation": {...}}}``. Default: ``releases.json`` of this package, which every install carries
  (in a source checkout, the tracked file that ``train.export --register`` writes).
- ``LADDER_ZOO_HUB_DIR``: the local Hub roots, ``os.pathsep``-separated (set but empty: none). Default: in a
  source checkout (``source_checkout``: the package imported from a clone, ``pip install -e .`` or ``PYTHONPATH``),
  its ``hub/`` folder, where this project keeps the weights it trains; for an installed package, none.

A published tag's files carry the recorded sha256; every load checks it, wherever the file came from. A tag
with no copy anywhere raises ``WeightsNotFoundError`` naming the ``train/`` recipe that produces it:
``pretrained=True`` never returns random weights.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RevisionNotFoundError,
)

from .errors import WeightsIntegrityError, WeightsNotFoundError
from .version import __version__
from .weights import INDEX_NAME, WEIGHTS_NAME

HUB_ORG = "ladder-zoo"
RELEASES_ENV = "LADDER_ZOO_RELEASES"
HUB_DIR_ENV = "LADDER_ZOO_HUB_DIR"
DEFAULT_RELEASES = Path(__file__).resolve().parent / "releases.json"


@functools.lru_cache(maxsize=None)
def source_checkout() -> Optional[Path]:
    """The ladder-zoo source checkout this package is imported from (an editable install, or ``PYTHONPATH`` at a
    clone): the folder above the package whose ``pyproject.toml`` is ladder-zoo's. None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"ladder-zoo"', pyproject.read_text(), re.MULTILINE):
        return root
    return None


def checkout_hub_dir() -> Optional[Path]:
    """A source checkout's ``hub/``: the weights this project trained, in Hub layout (each file under 25 MB)."""
    checkout = source_checkout()
    return checkout / "hub" if checkout is not None else None


def releases_file() -> Path:
    """The release record: ``$LADDER_ZOO_RELEASES``, default this package's ``releases.json``."""
    return Path(os.environ.get(RELEASES_ENV) or DEFAULT_RELEASES).expanduser()


def releases() -> Dict[str, dict]:
    """The published weights: ``{repo_id: {"files": {filename: sha256}, "revision": commit or None, ...}}``, read
    from the record each time (a few kB; ``train.export --register`` may have just written it)."""
    path = releases_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def repo_id(architecture: str, tag: str) -> str:
    """The Hub repository of a pretrained tag: one repository per ``architecture.tag``, timm-style."""
    return f"{HUB_ORG}/{architecture}.{tag}"


def is_published(repo: str) -> bool:
    return repo in releases()


def local_hub_roots() -> List[Path]:
    """Folders searched for ``<repo_id>/`` copies: the ``$LADDER_ZOO_HUB_DIR`` entries; unset, a source checkout's
    ``hub/`` (an installed package has none)."""
    configured = os.environ.get(HUB_DIR_ENV)
    if configured is None:
        folder = checkout_hub_dir()
        return [folder] if folder is not None and folder.is_dir() else []
    return [Path(p).expanduser() for p in configured.split(os.pathsep) if p]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, repo: str, filename: str) -> None:
    """Check a file of a published repository against its recorded sha256 (a no-op for unpublished repos)."""
    expected = releases().get(repo, {}).get("files", {}).get(filename)
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"sha256 mismatch for {repo}/{filename} at {path}: found {actual}, released {expected}. The file is "
            "corrupt or not the released one. Delete it (for a Hub cache copy: `hf cache delete` or remove the "
            "snapshot folder) and load again; pass revision=<commit> to pin a specific Hub version."
        )


def resolve_weights(
    architecture: str,
    tag: Optional[str],
    *,
    file: Optional[str] = None,
    hf_hub_id: Optional[str] = None,
    url: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[str] = None,
    recipe: Optional[str] = None,
) -> Path:
    """A verified local path (a weight file, or a shard index next to its shards) for ``architecture.tag``: the
    ``file`` given, an ``hf_hub_id`` given, the ``url`` of others' weights, else the tag's own repository;
    ``recipe`` (the ``train/`` recipe that produces the tag) goes into the error when there is none."""
    name = f"{architecture}.{tag}" if tag else architecture
    if file:
        path = Path(file).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"The weights given for {name} do not exist: {path}.")
        return path
    if url and not hf_hub_id:
        if revision is not None:
            raise ValueError(f"revision= pins Hub weights; {name}'s are a file at {url}.")
        return url_weights(url, cache_dir)

    repo = hf_hub_id or (repo_id(architecture, tag) if tag else None)
    if repo is None:
        raise WeightsNotFoundError(
            f"{architecture} declares no pretrained tag. Use a tagged name (see `ladder-zoo list {architecture}*`), "
            "pass checkpoint_path=..., or pretrained=False for random initialisation."
        )
    repo, revision = _split_revision(repo, revision)

    published = is_published(repo)
    if published and revision is None:
        # The Hub cache and verified local copies hold the released bytes (sha256-pinned): no network needed.
        path = _download(repo, None, cache_dir, local_files_only=True) or _local_copy(repo)
        if path is not None:
            return path

    hub_error: Optional[Exception] = None
    if published or hf_hub_id:
        try:
            if is_offline() or hub_reachable():
                return _download(repo, revision, cache_dir)
            # no answer: huggingface_hub would retry for 20-50 s before failing alike; its cache only, at once
            found = _download(repo, revision, cache_dir, local_files_only=True)
            if found is not None:
                return found
            hub_error = ConnectionError(f"{hf_constants.ENDPOINT} does not answer")
        except RevisionNotFoundError as e:
            raise WeightsNotFoundError(f"The Hub repository {repo} has no revision '{revision}': {e}") from e
        except (LocalEntryNotFoundError, HfHubHTTPError) as e:  # offline, no connection, no such repo
            hub_error = e

    if revision is not None:
        raise WeightsNotFoundError(
            f"{name} at revision '{revision}' is neither reachable on the Hub nor cached ({hub_error}). A pinned "
            "revision is only served by the Hub or its cache: go online once, or drop revision= to use a local copy."
        )
    local = None if published else _local_copy(repo)  # a published tag's local copies were looked for above
    if local is not None:
        return local
    raise WeightsNotFoundError(_not_found_message(name, repo, hub_error, recipe))


def _download(repo: str, revision: Optional[str], cache_dir: Optional[str], local_files_only: bool = False):
    """The weights of ``repo`` through huggingface_hub, verified; with ``local_files_only``, from its cache or None."""
    release = releases().get(repo)
    revision = revision or (release or {}).get("revision")

    def get(filename: str) -> Path:
        path = Path(hf_hub_download(
            repo, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            library_name="ladder-zoo", library_version=__version__,
        ))
        verify(path, repo, filename)
        return path

    try:
        if not (release and INDEX_NAME in release["files"]):
            try:
                return get(WEIGHTS_NAME)
            except EntryNotFoundError:  # an unrecorded repository may hold shards instead
                if release:
                    raise
        index = get(INDEX_NAME)
        for shard in _shards(index):
            get(shard)
        return index
    except LocalEntryNotFoundError:
        if local_files_only:
            return None
        raise


def _shards(index: Path) -> List[str]:
    return sorted(set(json.loads(index.read_text())["weight_map"].values()))


def _local_copy(repo: str) -> Optional[Path]:
    for folder in (root / repo for root in local_hub_roots()):
        for filename in (INDEX_NAME, WEIGHTS_NAME):
            path = folder / filename
            if path.is_file():
                verify(path, repo, filename)
                if filename == INDEX_NAME:
                    for shard in _shards(path):
                        verify(folder / shard, repo, shard)
                return path
    return None


def url_weights(url: str, cache_dir: Optional[str] = None) -> Path:
    """The file at ``url``, downloaded once, with a progress bar, into torch.hub's checkpoint cache
    (``$TORCH_HOME/hub/checkpoints/``, or ``cache_dir``), where timm and torch.hub keep such files too; a cached copy
    is used without network. A sha256 prefix in the file name (``name-<hex>.pth``, torch.hub's ``check_hash``
    convention) is checked by the download and on every load. ``HF_HUB_OFFLINE`` forbids the download."""
    import urllib.error
    from http.client import HTTPException

    from torch.hub import HASH_REGEX, download_url_to_file

    path = url_cache_path(url, cache_dir)
    prefix = HASH_REGEX.search(path.name)
    prefix = prefix.group(1) if prefix else None
    if path.is_file():
        if prefix and not sha256_file(path).startswith(prefix):
            raise WeightsIntegrityError(
                f"{path} is not the file {url} names (its sha256 does not start with {prefix}): it is corrupt. "
                "Delete it and load again to download it anew.")
        return path
    fix = f"download it once online, or put the file at {path}"
    if is_offline():
        raise WeightsNotFoundError(f"HF_HUB_OFFLINE is set and {url} is not cached at {path}: {fix}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # into a temporary file beside path, renamed once complete and verified: nothing is left half-written
        download_url_to_file(url, str(path), hash_prefix=prefix, progress=True)
    except RuntimeError as e:  # torch.hub: 'invalid hash value (expected ..., got ...)'
        raise WeightsIntegrityError(f"The download of {url} is not the file its name promises ({e}); nothing was "
                                    "kept. Try again; if it persists, the file at the URL changed.") from e
    except (urllib.error.URLError, OSError, HTTPException, ValueError) as e:
        raise WeightsNotFoundError(f"Could not download {url} ({type(e).__name__}: {e}) and it is not cached: "
                                   f"check the network, or {fix}.") from e  # fix names the cache path, once
    return path


def url_cache_path(url: str, cache_dir: Optional[str] = None) -> Path:
    """Where the file at ``url`` is cached: torch.hub's ``load_state_dict_from_url`` place for it."""
    from urllib.parse import urlparse

    from torch.hub import get_dir

    return (Path(cache_dir) if cache_dir else Path(get_dir()) / "checkpoints") / Path(urlparse(url).path).name


def hub_reachable(timeout: float = 3.0) -> bool:
    """One request to the Hub endpoint, no retries: any HTTP answer means reachable. huggingface_hub retries a
    refused or timed-out connection for about 20 s before it gives up."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(hf_constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def hf_hub_file(repo: str, filename: str, revision: Optional[str], cache_dir: Optional[str]) -> Path:
    """A file of an ``hf-hub:`` repository (``org/name[@revision]``): from the Hub when it answers, else (offline,
    or the Hub unreachable) from its cache or, with no revision pinned, a local Hub folder; else one
    ``WeightsNotFoundError`` line, within seconds."""
    repo, revision = _split_revision(repo, revision)
    online = not is_offline() and hub_reachable()
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=not online, library_name="ladder-zoo",
                                    library_version=__version__))
    except LocalEntryNotFoundError as e:
        local = [root / repo / filename for root in local_hub_roots()] if revision is None else []
        found = next((path for path in local if path.is_file()), None)
        if found is None:
            raise WeightsNotFoundError(f"{unreachable_message(repo, revision)} ({type(e).__name__})") from e
        return found
    except (RevisionNotFoundError, EntryNotFoundError, HfHubHTTPError) as e:
        raise WeightsNotFoundError(f"hf-hub:{repo}: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def hf_hub_weights(repo: str, revision: Optional[str], cache_dir: Optional[str]) -> Path:
    """The weights of an ``hf-hub:`` repository, as ``hf_hub_file`` finds its files (verified if released)."""
    repo, revision = _split_revision(repo, revision)
    try:
        found = _download(repo, revision, cache_dir, local_files_only=is_offline() or not hub_reachable())
    except (RevisionNotFoundError, EntryNotFoundError, HfHubHTTPError) as e:
        raise WeightsNotFoundError(f"hf-hub:{repo}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    found = found or (None if revision else _local_copy(repo))
    if found is None:
        raise WeightsNotFoundError(unreachable_message(repo, revision))
    return found


def _split_revision(repo: str, revision: Optional[str]):
    """timm's ``org/name@revision`` form: (repo, revision), refusing two different revisions."""
    repo, _, pinned = repo.partition("@")
    if pinned and revision not in (None, pinned):
        raise ValueError(f"Two revisions given for {repo}: '{pinned}' in the id and revision='{revision}'.")
    return repo, revision or pinned or None


def searched_folders() -> str:
    """The local Hub roots, for an error message: where they come from when no setting names them."""
    roots = ", ".join(map(str, local_hub_roots()))
    if os.environ.get(HUB_DIR_ENV) is not None:
        return roots or f"none ({HUB_DIR_ENV} is empty)"
    return f"{roots} (this source checkout's)" if roots else f"none (set {HUB_DIR_ENV})"


def unreachable_message(repo: str, revision: Optional[str]) -> str:
    searched = searched_folders()
    return (
        f"Could not reach the Hub at {hf_constants.ENDPOINT} for {repo}" + (f" @ {revision}" if revision else "")
        + f" and no copy is in the Hugging Face cache or a local Hub folder. Check the network or HF_ENDPOINT, "
        f"download it once online (`hf download {repo}`), or put a copy in {HUB_DIR_ENV}/{repo}/. Local Hub "
        f"folders searched: {searched}."
    )


def is_offline() -> bool:
    check = getattr(hf_constants, "is_offline_mode", None)
    return bool(check()) if check else bool(hf_constants.HF_HUB_OFFLINE)


def _not_found_message(name: str, repo: str, hub_error: Optional[Exception], recipe: Optional[str]) -> str:
    searched = searched_folders()
    if not is_published(repo) and hub_error is None:
        produce = (f"Produce them with `torchrun ... -m train.pretrain --config {recipe}` then `python -m "
                   f"train.export CHECKPOINT --out hub/{repo}` (docs/training.md), or use" if recipe else "Use")
        return (
            f"No weights are published for {name}. {produce} pretrained=False. Local Hub folders searched for "
            f"{repo}/: {searched}."
        )
    if is_offline():
        return (
            f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({hub_error}). Fix: download it "
            f"once online (`hf download {repo}`), unset HF_HUB_OFFLINE, or put a copy in {HUB_DIR_ENV}/{repo}/. "
            f"Local Hub folders searched: {searched}."
        )
    return (
        f"Could not fetch {repo} from the Hub ({type(hub_error).__name__}: {hub_error}) and no local copy exists. "
        f"Check the network or HF_ENDPOINT, or put a copy in {HUB_DIR_ENV}/{repo}/ (a source checkout holds the "
        f"released ones in its hub/ folder). Local Hub folders searched: {searched}."
    )
