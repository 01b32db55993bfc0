"""Whole screens (issue #16): a spatial-noise generator sampled at screen size, against held-back
whole screens, beside the best a patch generator can do at that size (a mosaic of its patches).

Reads the work folder of ``bench/quality_swd.py`` (``--out DIR``), which holds the held-back
screens it cropped (``crop_holdout/screens``) and each configuration's checkpoint
(``<config>/ckpt.pt``).  Every screen size (sides cut down to multiples of 16) that two or
more held-back screens have is its own group, with only the screens of exactly that size (a
taller screen cropped would not be a whole screen).  Then, after the quantize stage with its
defaults on both sides' generated screens and with no clean-up on the held-back ones
(palette-fair, as ``quality_swd.py --after-quantize``):

* ``--spatial NAMES`` (default ``spatial``; comma separated): whole screens drawn at that size
  by each spatial generator (``sample_images(..., width, height)``; a positional one draws a
  whole screen's layout, top to bottom);
* ``--patch NAME`` (default ``ours``): mosaics of the default generator's 64×64 samples laid
  side by side to the same size (what a patch generator offers for a screen);
* the floor: the training screens of the same size against the held-back ones.

A conditional generator draws each group's screens in the group's game when its held-back
screens are all of one game (``--like``): one style at a time, as a designer would ask.

SWD on the Laplacian pyramid down to 16 px (more levels than at 64×64: 256-px structure is
measured), the same on the top and the bottom 64 rows alone against the held-back screens'
(layout: a generator that does not know where in a screen it draws puts the same things at
both), and the border/interior ratio on the 16-px grid; ``n`` is the number of held-back
screens, so the figures are noisy (state them with it).

    python bench/quality_screens.py WORK [--spatial spatial,pos] [--patch ours] [--n 64] [--seed 0]
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def screens_of(folder: Path) -> list[np.ndarray]:
    from stages._common import load_image

    return [load_image(p, mode="RGB") for p in sorted(folder.glob("*.png"))]


def games_of(crop_dir: Path) -> list:
    """Each screen's game, in :func:`screens_of`'s order (crop's screens.json; None unknown)."""
    import json

    path = crop_dir / "screens.json"
    by_id = ({r["id"]: r.get("game") for r in json.loads(path.read_text())}
             if path.is_file() else {})
    return [by_id.get(p.stem) for p in sorted((crop_dir / "screens").glob("*.png"))]


def mosaic(patches: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """``n`` screens of (h, w) made of the patches side by side, in order (cropped at the
    right and bottom edges)."""
    s = patches.shape[1]
    rows, cols = -(-h // s), -(-w // s)
    need = n * rows * cols
    reps = -(-need // len(patches))
    p = np.concatenate([patches] * reps)[:need].reshape(n, rows, cols, s, s, 3)
    return p.transpose(0, 1, 3, 2, 4, 5).reshape(n, rows * s, cols * s, 3)[:, :h, :w]


def size_groups(held: list[np.ndarray], train: list[np.ndarray], min_held: int = 2,
                held_games: Optional[list] = None) -> list:
    """(h, w, held (n, h, w, 3), training (m, h, w, 3), game) for every screen size (sides cut
    down to multiples of 16) that at least ``min_held`` held-back screens have, commonest
    first; only screens of exactly that size count (a taller screen cropped would not be a
    whole screen).  ``game``: the one game of the group's held-back screens, else None."""
    def cut(s: np.ndarray) -> tuple[int, int]:
        return s.shape[0] // 16 * 16, s.shape[1] // 16 * 16

    sizes = collections.Counter(cut(s) for s in held)
    out = []
    games = held_games or [None] * len(held)
    for (h, w), n in sizes.most_common():
        if n >= min_held:
            pick = [s[:h, :w] for s in held if cut(s) == (h, w)]
            tr = [s[:h, :w] for s in train if cut(s) == (h, w)]
            names = {g for s, g in zip(held, games) if cut(s) == (h, w)}
            out.append((h, w, np.stack(pick),
                        np.stack(tr) if tr else np.zeros((0, h, w, 3), np.uint8),
                        names.pop() if len(names) == 1 else None))
    return out


#: Rows of the top and bottom bands that :func:`bands` compares (a whole screen's layout: what
#: lies at its top and at its bottom).
BAND = 64


def bands(q: np.ndarray, held_q: np.ndarray, seed: int) -> str:
    """SWD of the top ``BAND`` rows against the held-back screens' top rows, and of the bottom
    rows against theirs: a generator without a screen's layout draws the same at both."""
    from stages._metrics import swd

    if q.shape[1] < 2 * BAND:
        return "-"
    top = swd(q[:, :BAND], held_q[:, :BAND], seed=seed)["swd"]
    bottom = swd(q[:, -BAND:], held_q[:, -BAND:], seed=seed)["swd"]
    return f"{top:.0f} / {bottom:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="quality_swd.py's --out folder")
    ap.add_argument("--spatial", default="spatial", help="spatial generators, comma separated")
    ap.add_argument("--patch", default="ours")
    ap.add_argument("--n", type=int, default=64, help="generated screens per set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from quality_swd import quantized
    from quality_tiles import grid_alignment_text as grid
    from stages._metrics import swd
    from stages.sample import load_generator, sample_images

    held_all = screens_of(args.work / "crop_holdout" / "screens")
    train_all = screens_of(args.work / "crop_train" / "screens")
    groups = size_groups(held_all, train_all,
                         held_games=games_of(args.work / "crop_holdout"))
    if not groups:
        sys.exit("quality_screens: no screen size has 2 or more held-back screens")
    work = args.work / "screens"
    crop = args.work / "crop_train"       # quantize draws to its colours, as in the pipeline
    rows = ["| screens | n | SWD after quantize vs held back | per level (fine → coarse) | "
            f"top / bottom {BAND} rows | border/interior on the grid / best off it |",
            "|---|---|---|---|---|---|"]
    for h, w, held, train, game in groups:
        tag = f"{w}x{h}"
        held_q = quantized(held, work / f"q_held_{tag}", cleanup=0, reference=crop)

        def row(name: str, images: np.ndarray, q: np.ndarray) -> str:
            r = swd(q, held_q, seed=args.seed)
            levels = " / ".join(f"{v:.0f}" for v in r["levels"])
            return (f"| {tag} {name} | {len(images)} | {r['swd']:.1f} | {levels} | "
                    f"{bands(q, held_q, args.seed)} | {grid(q)} |")

        rows.append(f"| {tag} real held-back screens (no clean-up) | {len(held)} | - | - | - | "
                    f"{grid(held_q)} |")
        if len(train) >= 2:
            rows.append(row("real training screens (floor)", train,
                            quantized(train, work / f"q_train_{tag}", cleanup=0, reference=crop)))
        for name in [x for x in args.spatial.split(",") if x]:
            ck = args.work / name / "ckpt.pt"
            if not ck.exists():
                continue
            G, _ = load_generator(ck)
            like = game if game in (G.cfg.classes or ()) else ""   # one style at a time
            big = sample_images(G, args.n, seed=args.seed + 7, width=w, height=h, like=like)
            label = f"{name}: whole screens" + (f", like {like}" if like else "")
            rows.append(row(label, big, quantized(big, work / f"q_{name}_{tag}", reference=crop)))
            from PIL import Image
            Image.fromarray(np.concatenate(list(big[:4]), 1)).save(work / f"{name}_{tag}_4.png")
        patch_ck = args.work / args.patch / "ckpt.pt"
        if patch_ck.exists():
            G, _ = load_generator(patch_ck)
            s_ = G.cfg.height
            per = -(-h // s_) * -(-w // s_)
            tiles = sample_images(G, args.n * per, seed=args.seed + 7)
            mos = mosaic(tiles, args.n, h, w)
            rows.append(row(f"{args.patch}: mosaics of {s_}x{s_} samples", mos,
                            quantized(mos, work / f"q_{args.patch}_{tag}", reference=crop)))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
