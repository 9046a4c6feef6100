"""Install what a GPU draw returned (the files examples/gpu/draw.py wrote under $OUT) into this checkout.

    python examples/gpu/collect.py DIR [--hub-root hub] [--queue examples/gpu/queue.yaml] [--results results]
                                       [--readme README.md] [--compile-cache examples/gpu/compile_cache]

DIR holds draw.tar.part00, part01, ..., summary.txt and speed.json (call 2's $OUT). collect.py checks each part
against the size and sha256 summary.txt gives it, joins and unpacks them, and checks every file of each returned
Hub folder against the sha256 of the returned release record (written on the GPU machine by `train.export
--register`). Then it writes: each good folder to HUB_ROOT/ladder-zoo/<name>.<tag>/ and its entry into the
package's release record (`ladder_zoo.hub.releases_file()`: ladder_zoo/releases.json, or $LADDER_ZOO_RELEASES),
the evaluations, logs, speed.json and draw.json to RESULTS/<gpu>_<date>/ (with a README.md), `status: released
...` on the queue entries released, README's released-weights table, and each returned compile cache of at most
4 MiB to COMPILE_CACHE/<stack>/. It ends with what to commit. A missing or damaged part: one line, exit 1,
nothing written. A folder whose files differ from its record entry costs that folder only: the others are
installed, it is named, and the exit status is 1.

A --tiny draw (tests/test_draw.py) is no release: it is collected only with every destination given explicitly
(the five options and LADDER_ZOO_RELEASES), none of them the checkout's own.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
REPO_CACHE = ROOT / "examples" / "gpu" / "compile_cache"  # draw_pack's: compile caches kept by stack
CACHE_MAX = 4 * 2**20  # a compile cache kept in the repository, which every draw's tree (64 MiB at most) carries
sys.path.insert(0, str(ROOT))
from ladder_zoo import hub  # noqa: E402  (the checkout's, wherever this runs from)
from ladder_zoo.publish import add_releases  # noqa: E402


class CollectError(Exception):
    """One line: what is wrong with the returned files, or with where they would go."""


def read_parts(folder: Path) -> List[Path]:
    """The parts summary.txt lists, each present with its size and sha256."""
    summary = folder / "summary.txt"
    if not summary.is_file():
        raise CollectError(f"{folder} holds no summary.txt: not the files of a draw (call 2's $OUT: draw.py --finish)")
    listed = [line.split() for line in summary.read_text().splitlines() if line.startswith("part ")]
    if not listed:
        raise CollectError(f"{summary} lists no parts")
    parts = []
    for _, name, size, digest in listed:
        path = folder / name
        if not path.is_file():
            raise CollectError(f"{name} is missing from {folder} (summary.txt lists {len(listed)} parts): fetch it "
                               "again")
        if path.stat().st_size != int(size) or hub.sha256_file(path) != digest:
            raise CollectError(f"{name} is damaged (its size or sha256 differs from summary.txt's): fetch it again")
        parts.append(path)
    return parts


def unpack(parts: List[Path], into: Path) -> Path:
    """Join the parts and unpack the tar into ``into``; returns its draw/ folder."""
    joined = into / "draw.tar"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    try:
        with tarfile.open(joined) as tar:
            for member in tar.getmembers():
                unsafe = member.name.startswith("/") or ".." in member.name.split("/")
                if unsafe or not (member.isfile() or member.isdir()):
                    raise CollectError(f"the archive holds {member.name!r}, which draw.py never writes")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:
                tar.extractall(into)
    except tarfile.TarError as e:
        raise CollectError(f"the joined parts are no tar archive ({e}): fetch them again") from e
    draw = into / "draw"
    if not (draw / "draw.json").is_file():
        raise CollectError("the archive holds no draw/draw.json: not a draw's")
    return draw


def verify(draw: Path):
    """(draw.json, record entries of the good folders, those folders, warnings, bad folders): a returned Hub
    folder is good when it holds exactly the files of its entry in the returned release record, each with its
    sha256; a bad one is named with what is wrong, and costs that folder only."""
    info = json.loads((draw / "draw.json").read_text())
    record = json.loads((draw / "releases.json").read_text()) if (draw / "releases.json").is_file() else {}
    folders = {f"{f.parent.name}/{f.name}": f for f in sorted((draw / "hub").glob("*/*")) if f.is_dir()}
    bad = {repo: why for repo, folder in folders.items() if (why := folder_fault(folder, record.get(repo)))}
    good = {repo: folder for repo, folder in folders.items() if repo not in bad}
    warnings = [f"{repo}: in the returned record, but its folder did not come back (left out of the pack?): not "
                "installed" for repo in record if repo not in folders]
    warnings += [f"{f.name}: exported without a release record entry (draw.json says why): not installed"
                 for f in sorted((draw / "exports").glob("*")) if f.is_dir()]
    return info, {repo: record[repo] for repo in good}, good, warnings, bad


def folder_fault(folder: Path, entry: Optional[dict]) -> Optional[str]:
    """What is wrong with a returned Hub folder against its record entry; None when nothing is."""
    if entry is None:
        return "the folder came back without an entry in the returned release record"
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    if files != sorted(entry["files"]):
        return f"the folder holds {files}, its record entry names {sorted(entry['files'])}"
    for name, expected in entry["files"].items():
        actual = hub.sha256_file(folder / name)
        if actual != expected:
            return f"{name}: sha256 {actual[:16]}... differs from the record's {expected[:16]}..."
    return None


def results_name(info: dict) -> str:
    """<gpu>_<date>: h200_2026-12-01 for 'NVIDIA H200' on that day (UTC); cpu_... for a --tiny draw."""
    gpu = (info.get("stack") or {}).get("gpu") or "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", gpu.lower()) if w and w not in ("nvidia", "tesla")]
    return f"{words[0] if words else 'gpu'}_{info['started'][:10]}"


def results_folder(root: Path, info: dict) -> Path:
    """RESULTS/<gpu>_<date>, or _2, _3, ... when another draw of that day is there already."""
    base = results_name(info)
    for n in range(1, 100):
        folder = root / (base if n == 1 else f"{base}_{n}")
        earlier = folder / "draw.json"
        if not folder.exists() or earlier.is_file() and json.loads(earlier.read_text()).get("id") == info["id"]:
            return folder
    raise CollectError(f"{root} holds 99 draws of {base}")


def released_runs(info: dict, installed: Dict[str, dict]) -> Dict[tuple, str]:
    """(recipe, seed) -> release name, for each queue entry whose folder was installed."""
    releases = info.get("releases") or {}
    return {(releases[name]["recipe"], releases[name]["seed"]): name
            for name in (repo.split("/", 1)[1] for repo in installed) if name in releases}


def mark_queue(path: Path, released: Dict[tuple, str], status: str) -> List[str]:
    """Set ``status: <status>`` on the queue entries of ``released`` (recipe, seed), keeping every other line."""
    lines = path.read_text().splitlines(keepends=True)
    recipe, seed, marked = None, 0, []
    for i, line in enumerate(lines):
        if m := re.match(r"- recipe:\s*(\S+)", line):
            recipe, seed = m.group(1), 0
        elif m := re.match(r"\s+seed:\s*(\d+)", line):
            seed = int(m.group(1))
        elif (m := re.match(r"(\s+status:\s*)", line)) and (recipe, seed) in released:
            lines[i] = f"{m.group(1)}{status}\n"
            marked.append(recipe)
    path.write_text("".join(lines))
    return marked


def update_readme(path: Path) -> bool:
    """README's released-weights block, from the record (what `ladder-zoo list --pretrained --markdown` prints)."""
    from ladder_zoo.cli import releases_markdown

    text = path.read_text()
    new = re.sub(r"(<!-- releases:start -->\n).*?(<!-- releases:end -->)",
                 lambda m: m.group(1) + releases_markdown() + m.group(2), text, flags=re.S)
    path.write_text(new)
    return new != text


def copy_results(draw: Path, summary: Path, folder: Path, info: dict) -> List[str]:
    """The evaluations (named by release), logs, speed.json, draw.json, summary.txt and a README.md into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    copied = ["summary.txt"]
    shutil.copy2(summary, folder / "summary.txt")
    for name in ("draw.json", "speed.json", "draw.log"):
        if (draw / name).is_file():
            shutil.copy2(draw / name, folder / name)
            copied.append(name)
    for evaluation in sorted((draw / "eval").glob("*")):  # eval/<name>.<tag>/<model>@<step>[_what].<ext>, ...
        for f in sorted(evaluation.iterdir()):
            if f.suffix in (".json", ".md", ".png"):
                what = f.stem.partition("@")[2].partition("_")[2] if "@" in f.stem else f.stem
                target = f"{evaluation.name}{'.' + what if what else ''}{f.suffix}"
                shutil.copy2(f, folder / target)
                copied.append(target)
    if (draw / "logs").is_dir():
        shutil.copytree(draw / "logs", folder / "logs", dirs_exist_ok=True)
        copied.append("logs/")
    (folder / "README.md").write_text(results_readme(draw, summary, info))
    return copied


def results_readme(draw: Path, summary: Path, info: dict) -> str:
    stack = info.get("stack") or {}
    speed = json.loads((draw / "speed.json").read_text()) if (draw / "speed.json").is_file() else {}
    probe = speed.get("probe") or {}
    eager, fastest = probe.get("eager") or {}, probe.get("fastest") or {}
    busy = speed.get("gpu_busy") or {}
    paragraphs = [
        f"Stack: Python {stack.get('python')}, torch {stack.get('torch')}, timm {stack.get('timm')}, huggingface_hub "
        f"{stack.get('huggingface_hub')}; {stack.get('cpus')} CPUs; the checkout at {stack.get('commit')} "
        f"({stack.get('uncommitted_files')} files changed). Files final {(info.get('deadlines_s') or {}).get('end')} "
        f"s after call 1 began at the latest; packed at {(info.get('timings') or {}).get('total_s')} s.",
        f"Speed probe ({probe.get('recipe')}): compile=none {eager.get('img_per_s') or 0:,.0f} img/s"
        f"{'' if eager.get('alone') else ' (beside a run)'}, compile={fastest.get('mode')} "
        f"{fastest.get('img_per_s') or 0:,.0f} img/s (x{probe.get('ratio')}); modes that failed: "
        f"{probe.get('modes_failed') or 'none'}. GPU busy: "
        + (", ".join(f"{k} {100 * v['busy']:.0f} %" for k, v in busy.items()) or "not measured") + ".",
        "Files: `summary.txt` (what the draw printed last), `draw.log` (all it printed), `draw.json` (all it knew), "
        "`speed.json` (img/s per run and mode, GPU busy), `<name>.<tag>.json` (train.eval of the run's checkpoint) "
        "and its plots, `logs/` (each run's log.jsonl, each process's output). Made by "
        "`python3 examples/gpu/draw.py --start` and `--finish` (examples/gpu/README.md), installed by "
        "`python examples/gpu/collect.py`.",
        f"Failed: {'; '.join(info.get('failures') or []) or 'nothing'}.",
    ]
    head = f"# {stack.get('gpu') or 'the CPU (--tiny)'}, {info['started'][:10]}: a GPU draw (examples/gpu/draw.py)"
    table = summary.read_text().split("\n\n")[0].strip()
    wrapped = [textwrap.fill(p, 116, break_long_words=False, break_on_hyphens=False) for p in paragraphs]
    return "\n\n".join([head, wrapped[0], f"```\n{table}\n```", *wrapped[1:]]) + "\n"


def relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def destinations(args) -> Dict[str, Optional[Path]]:
    """hub_root, queue, results, readme and compile_cache: as given, else the checkout's (readme '': none)."""
    hub_dir = os.environ.get(hub.HUB_DIR_ENV)
    defaults = {"hub_root": Path(hub_dir.split(os.pathsep)[0]) if hub_dir else ROOT / "hub",
                "queue": ROOT / "examples" / "gpu" / "queue.yaml", "results": ROOT / "results",
                "readme": ROOT / "README.md", "compile_cache": REPO_CACHE}
    places = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    places["readme"] = places["readme"] if str(places["readme"]) not in ("", ".") else None
    return places


def check_not_the_checkout(args) -> None:
    """A --tiny draw goes only where every destination was given, none of them the checkout's own."""
    own = {ROOT / "hub", ROOT / "examples" / "gpu" / "queue.yaml", ROOT / "results", ROOT / "README.md",
           REPO_CACHE, hub.DEFAULT_RELEASES}
    record = os.environ.get(hub.RELEASES_ENV)
    named = {k: getattr(args, k) for k in ("hub_root", "queue", "results", "readme", "compile_cache")}
    named["LADDER_ZOO_RELEASES"] = Path(record) if record else None
    wrong = [k for k, v in named.items() if v is None or v.resolve() in own]
    if wrong:
        raise CollectError("a --tiny draw is no release: collect it only into folders of your own, given with "
                           "--hub-root, --queue, --results, --readme, --compile-cache and LADDER_ZOO_RELEASES "
                           f"(not so: {', '.join(wrong)})")


def install(draw: Path, summary: Path, info: dict, record: Dict[str, dict], folders: Dict[str, Path],
            places: dict) -> dict:
    """Write everything verified: Hub folders, record entries, results, queue, README. Returns what changed."""
    results = results_folder(places["results"], info)
    for repo, folder in folders.items():
        target = places["hub_root"] / repo
        staging = target.with_name(target.name + ".collecting")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    record_path = add_releases(record)
    copied = copy_results(draw, summary, results, info)
    commit = (info.get("stack") or {}).get("commit") or git_commit() or "unknown commit"
    status = f"released {info['started'][:10]} on {results.name.split('_')[0]} from {commit[:12]} ({relative(results)})"
    released = released_runs(info, record)
    marked = mark_queue(places["queue"], released, status) if released else []
    readme = places["readme"] is not None and places["readme"].is_file() and update_readme(places["readme"])
    caches = install_caches(draw, places["compile_cache"])
    return {"results": results, "copied": copied, "marked": marked, "readme": readme, "record": record_path,
            "caches": caches}


def install_caches(draw: Path, folder: Path) -> Dict[str, List[str]]:
    """The returned compile caches (draw/compile_cache/<stack>/<recipe>.<mode>.bin) of at most CACHE_MAX bytes into
    ``folder``/<stack>/, where the next draw on that stack loads them; larger ones stay out (each draw's tree
    carries the folder)."""
    kept, too_big = [], []
    for path in sorted((draw / "compile_cache").glob("*/*.bin")):
        name = f"{path.parent.name}/{path.name}"
        if path.stat().st_size > CACHE_MAX:
            too_big.append(f"{name} ({path.stat().st_size / 2**20:.1f} MiB)")
            continue
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, folder / name)
        kept.append(name)
    return {"kept": kept, "too_big": too_big}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="examples/gpu/collect.py", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="the folder holding the returned files")
    parser.add_argument("--hub-root", type=Path, help="default: the first of $LADDER_ZOO_HUB_DIR, else hub/")
    parser.add_argument("--queue", type=Path, help="default: examples/gpu/queue.yaml")
    parser.add_argument("--results", type=Path, help="default: results/")
    parser.add_argument("--readme", type=Path, help="the README whose released-weights table is regenerated "
                                                    "(default: README.md; '' for none)")
    parser.add_argument("--compile-cache", type=Path, help="where compile caches are kept by stack (default: "
                                                           "examples/gpu/compile_cache)")
    args = parser.parse_args(argv)
    places = destinations(args)
    try:
        parts = read_parts(args.dir)
        with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
            draw = unpack(parts, Path(tmp))
            info, record, folders, warnings, bad = verify(draw)
            if info.get("tiny"):
                check_not_the_checkout(args)
            done = install(draw, args.dir / "summary.txt", info, record, folders, places)
    except CollectError as e:
        print(f"collect: error: {e}", file=sys.stderr)
        return 1
    releases = info.get("releases") or {}
    print(f"collected draw {info['id']} ({done['results'].name}): {len(folders)} release(s) installed, sha256 "
          "checked" + (f"; {len(bad)} NOT installed (below)" if bad else ""))
    for repo in folders:
        release = releases.get(repo.split("/", 1)[1], {})
        late = f" (not evaluated: {release['note']})" if release.get("status") == "registered" else ""
        print(f"  {relative(places['hub_root'] / repo)}: {len(record[repo]['files'])} files{late}")
    for repo, why in bad.items():
        print(f"  NOT installed: {repo}: {why}")
    for name, release in releases.items():
        if f"{hub.HUB_ORG}/{name}" not in folders and f"{hub.HUB_ORG}/{name}" not in bad:
            print(f"  not released: {name}: {release['status']}" + (f" ({release['note']})" if release.get("note")
                                                                     else ""))
    for line in [*(f"warning: {w}" for w in warnings), *(f"the draw failed: {f}" for f in info.get("failures") or [])]:
        print(f"  {line}")
    print(f"  results: {relative(done['results'])} ({len(done['copied'])} files); queue: {len(done['marked'])} "
          "entries marked released")
    caches = done["caches"]
    if caches["kept"] or caches["too_big"]:
        print(f"  compile caches: {len(caches['kept'])} kept in {relative(places['compile_cache'])}"
              + (f"; over {CACHE_MAX / 2**20:.0f} MiB, not kept: {', '.join(caches['too_big'])}"
                 if caches["too_big"] else ""))
    to_add = [relative(places["hub_root"] / repo) for repo in folders]
    to_add += [relative(done["record"]), relative(done["results"])]
    to_add += [relative(places["queue"])] if done["marked"] else []
    to_add += [relative(places["readme"])] if done["readme"] else []
    to_add += [relative(places["compile_cache"])] if caches["kept"] else []
    print("next: check the figures, add a MODEL_CARD.md section per release, run python -m pytest -q "
          "tests/test_docs.py, then\n  git add " + " ".join(to_add))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
