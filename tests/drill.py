"""The kill drill (`make drill`): real `kill -9`s of `pipeline run` spread over every stage of a
tiny run, each followed by a plain rerun that must finish with nothing lost and nothing corrupt.

For every kill point the drill

1. prepares the cache so that the chosen stage has work to do: either its artifacts are
   deleted (a first build, where train's kill leaves a checkpoint to resume), or
   the run is ``--force <stage>`` over a complete cache (a forced rerun: the old artifact must
   survive the kill as a hit), or out/<name>/ is marked stale (a kill during publish);
2. starts ``pipeline run`` and sends SIGKILL a random moment after that stage's work folder
   appears (the moment spread over the stage's duration in an uninterrupted run);
3. checks the cache as the kill left it: an artifact that passes the cache's own hit check
   (manifest and file sizes) must also pass every checksum and load, else it is *corrupt*;
4. reruns ``pipeline run`` and verifies every manifest's files (size, sha256, and that each
   loads: .npy/.npz with numpy, images with Pillow, .pt with torch, .json/.jsonl, .tmx/.tsx as
   XML), that out/<name>/ holds what an uninterrupted run produces, that a forced stage's old
   artifact was still a hit, and that no work folder without resume state or temporary file is
   left behind.

It prints one line per kill and then ``drill: kills=N survived=N corrupt=N resumed=N``
(``resumed``: reruns that continued from an interrupted stage's state, e.g. train's checkpoint).
Exit status 1 unless every kill survived with nothing corrupt.  Not collected by pytest.

Usage: ``python tests/drill.py [--kills 33] [--seed 0] [--keep DIR]``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from _helpers_pipeline import tiny_pipeline_toml  # tests/ is on sys.path: run as a script

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export")
#: kills per target; "publish" is the copy to out/<name>/ after export
PLAN = {"scrape": 3, "crop": 4, "train": 8, "sample": 3, "quantize": 3, "slice": 3,
        "dedupe": 3, "export": 4, "publish": 2}

TINY = tiny_pipeline_toml(steps=16, max_minutes=30.0, grid_every=4, swd_every=0)


# --------------------------------------------------------------------------- checks
def load_check(path: Path) -> None:
    """Raise unless ``path`` loads with the reader its type needs."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                z[k]
    elif suffix in (".png", ".gif", ".bmp", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".ppm",
                    ".tga"):
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif suffix == ".pt":
        import torch

        torch.load(path, map_location="cpu", weights_only=True)
    elif suffix in (".json", ".tiled-project"):
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                json.loads(line)
    elif suffix in (".tmx", ".tsx"):
        ET.parse(path)
    else:
        path.read_bytes().decode("utf-8") if suffix in (".html", ".txt") else path.read_bytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_problem(art: Path) -> str | None:
    """Full check of one committed artifact: every manifest file's size, sha256 and load."""
    try:
        m = json.loads((art / "manifest.json").read_text())
        files = m["files"]
    except Exception as e:  # noqa: BLE001
        return f"manifest: {e}"
    for rel, meta in files.items():
        p = art / rel
        if not p.is_file():
            return f"{rel} missing"
        if p.stat().st_size != meta["bytes"]:
            return f"{rel} size"
        if sha256(p) != meta["sha256"]:
            return f"{rel} checksum"
        try:
            load_check(p)
        except Exception as e:  # noqa: BLE001
            return f"{rel} does not load ({type(e).__name__})"
    return None


def committed(cache: Path) -> list[Path]:
    return sorted(p for s in STAGES if (cache / s).is_dir() for p in (cache / s).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".partial")
                  and (p / "manifest.json").is_file())


def corrupt_hits(cache: Path) -> list[str]:
    """Artifacts the cache would take as hits (its own cheap check) that fail the full one."""
    from pipeline.cache import check_artifact

    bad = []
    for art in committed(cache):
        if check_artifact(art, key=art.name) is None:
            why = artifact_problem(art)
            if why:
                bad.append(f"{art.parent.name}/{art.name}: {why}")
    return bad


def published(out: Path) -> dict[str, str]:
    """sha256 of the published files that do not depend on timings."""
    return {p.relative_to(out).as_posix(): sha256(p) for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.name != "report.html"}


def leftovers(proj: Path) -> list[str]:
    from pipeline.graph import has_resume_state

    cache = proj / "out" / "cache"
    found = []
    for s in STAGES:
        d = cache / s
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.endswith(".partial") and not has_resume_state(s, p):
                found.append(f"{s}/{p.name}")
            elif p.name.startswith("."):
                found.append(f"{s}/{p.name}")
    found += [p.name for p in (proj / "out").iterdir() if p.name.startswith(".tileset.")]
    return found


# --------------------------------------------------------------------------- runs
#: the code the drill runs: a snapshot of the working tree taken at the start (see ``snapshot``)
CODE = ROOT


def snapshot(dest: Path) -> Path:
    """Copy the project's packages to ``dest``, so that edits made to the working tree while the
    drill runs cannot change its results half-way (the reference and every rerun use one code)."""
    global CODE
    for pkg in ("pipeline", "stages", "palettes", "tilesets"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    CODE = dest
    sys.path.insert(0, str(dest))
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(CODE), OMP_NUM_THREADS="2")
    e.pop("TILEGAN_DEBUG", None)
    return e


def run(proj: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "run", *args], cwd=proj, env=env(),
                          capture_output=True, text=True, timeout=900)


def make_project(where: Path) -> Path:
    screens = where / "screens"
    screens.mkdir(parents=True)
    for f in sorted((ROOT / "examples" / "screens").glob("*.png"))[::12][:6]:
        shutil.copy(f, screens / f.name)
    (where / "pipeline.toml").write_text(TINY)
    return where


def stage_seconds(cache: Path) -> dict[str, float]:
    """How long each stage's latest run took (``train-loop``: train's steps alone)."""
    out = {}
    for s in STAGES:
        try:
            key = (cache / s / "LATEST").read_text().strip()
            m = json.loads((cache / s / key / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        out[s] = float(m.get("seconds") or 0.1)
        if s == "train":
            out["train-loop"] = float(m.get("summary", {}).get("train_seconds") or 0.5)
    return out


def kill_during(proj: Path, target: str, delay: float, force: bool,
                after_ckpt: bool = False) -> tuple[bool, str]:
    """Start `pipeline run` and SIGKILL it ``delay`` s after ``target`` begins (with
    ``after_ckpt``: after train wrote its first checkpoint).  Returns (killed while running,
    where the kill landed)."""
    cache, out = proj / "out" / "cache", proj / "out"
    args = ["--force", target] if force else []
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", *args], cwd=proj, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if target == "publish":
        def pattern() -> bool:
            return any(out.glob(".tileset.tmp-*"))
    else:
        marker = "*.partial/ckpt.pt" if after_ckpt else "*.partial"

        def pattern() -> bool:
            return (cache / target).is_dir() and any((cache / target).glob(marker))
    t0 = time.monotonic()
    while p.poll() is None and not pattern():
        if time.monotonic() - t0 > 600:
            break
        time.sleep(0.001)
    if p.poll() is None:
        time.sleep(delay)
    where = "?"
    if p.poll() is None:
        for s in STAGES:
            if (cache / s).is_dir() and any((cache / s).glob("*.partial")):
                where = s
        if any(out.glob(".tileset.*")):
            where = "publish"
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return p.returncode == -signal.SIGKILL, where


def prepare(proj: Path, target: str, mode: str) -> None:
    cache = proj / "out" / "cache"
    if mode == "fresh":     # the stage alone: a deterministic stage rebuilds the same bytes,
        shutil.rmtree(cache / target, ignore_errors=True)   # so the stages after it stay hits
    elif mode == "publish":
        (proj / "out" / "tileset" / ".tilegan-manifest.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=sum(PLAN.values()))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument("--targets", help="comma-separated stages (and 'publish') to kill in, in "
                                      "this order, instead of the plan")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    base = a.keep or Path(tempfile.mkdtemp(prefix="tilegan-drill-"))
    try:
        snapshot(base / "src")
        ref = make_project(base / "reference")
        r = run(ref)
        if r.returncode:
            print(f"drill: the uninterrupted reference run failed:\n{r.stderr}", file=sys.stderr)
            return 1
        want = published(ref / "out" / "tileset")
        proj = make_project(base / "drill")
        if run(proj).returncode:
            print("drill: the first run of the drill project failed", file=sys.stderr)
            return 1
        secs = stage_seconds(proj / "out" / "cache")   # warm: JIT caches filled by the reference
        targets = ([t.strip() for t in a.targets.split(",")] if a.targets else
                   [t for t, n in PLAN.items() for _ in range(n)])
        while not a.targets and len(targets) < a.kills:
            targets.append(rng.choice(list(PLAN)))
        targets = targets if a.targets else targets[: a.kills]
        kills = survived = corrupt = resumed = 0
        for i, target in enumerate(targets, 1):
            mode = "publish" if target == "publish" else ("force" if i % 3 == 0 else "fresh")
            prepare(proj, target, mode)
            dur = secs.get(target, 0.2) if target != "publish" else 0.05
            if target == "train" and mode == "fresh" and i % 2 == 0:
                dur = secs.get("train-loop", 0.5)
            delay = rng.uniform(0.0, max(dur, 0.02) * 1.1)
            # half of train's first-build kills come after its first checkpoint, to resume from
            after_ckpt = target == "train" and mode == "fresh" and i % 2 == 0
            killed, where = kill_during(proj, target, delay, force=(mode == "force"),
                                        after_ckpt=after_ckpt)
            if not killed:
                print(f"[{i:2d}] {target:<8} {mode:<7} delay={delay:.3f}s: finished before the kill")
                continue
            kills += 1
            bad = corrupt_hits(proj / "out" / "cache")
            r = run(proj)
            problems = list(bad)
            if r.returncode:
                problems.append("rerun failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
            else:
                for art in committed(proj / "out" / "cache"):
                    why = artifact_problem(art)
                    if why:
                        bad.append(f"{art.parent.name}/{art.name}: {why}")
                        problems.append(f"{art.parent.name}/{art.name}: {why}")
                if published(proj / "out" / "tileset") != want:
                    problems.append("out/tileset differs from the uninterrupted run")
                left = leftovers(proj)
                if left:
                    problems.append(f"leftovers {left}")
                if mode == "force" and f"{target:<9} ran" in r.stderr:
                    problems.append(f"the old {target} artifact was lost (the rerun ran it again)")
            if not r.returncode:      # durations drift with the machine's load: follow them
                secs.update(stage_seconds(proj / "out" / "cache"))
            corrupt += len(bad)
            res = "resuming" in r.stderr
            resumed += res
            ok = not problems
            survived += ok
            print(f"[{i:2d}] {target:<8} {mode:<7} delay={delay:.3f}s killed in {where:<8} "
                  f"{'ok' if ok else 'FAILED: ' + '; '.join(problems)}{' (resumed)' if res else ''}",
                  flush=True)
        print(f"drill: kills={kills} survived={survived} corrupt={corrupt} resumed={resumed}")
        return 0 if kills and survived == kills and corrupt == 0 else 1
    finally:
        if a.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
