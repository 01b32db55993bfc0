"""Whole screens (issue #16): a spatial-noise generator sampled at screen size, against held-back
whole screens, beside the best a patch generator can do at that size (a mosaic of its patches).

Reads the work folder of ``bench/quality_swd.py`` (``--out DIR``), which holds the held-back
screens it cropped (``crop_holdout/screens``) and each configuration's checkpoint
(``<config>/ckpt.pt``).  The screen size is the commonest held-back screen size cut down to
multiples of 16 (every held-back screen of that size is kept, cropped to it).  Then, after the
quantize stage with its defaults on both sides' generated screens and with no clean-up on the
held-back ones (palette-fair, as ``quality_swd.py --after-quantize``):

* ``--spatial NAME`` (default ``spatial``): whole screens drawn at that size by the spatial
  generator (``sample_images(..., width, height)``);
* ``--patch NAME`` (default ``ours``): mosaics of the default generator's 64×64 samples laid
  side by side to the same size (what a patch generator offers for a screen);
* the floor: the training screens of the same size against the held-back ones.

SWD on the Laplacian pyramid down to 16 px (more levels than at 64×64: 256-px structure is
measured) and the border/interior ratio on the 16-px grid; ``n`` is the number of held-back
screens, so the figures are noisy (state them with it).

    python bench/quality_screens.py WORK [--spatial spatial] [--patch ours] [--n 64] [--seed 0]
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def screens_of(folder: Path) -> list[np.ndarray]:
    from stages._common import load_image

    return [load_image(p, mode="RGB") for p in sorted(folder.glob("*.png"))]


def common_size(screens: list[np.ndarray]) -> tuple[int, int]:
    sizes = collections.Counter((s.shape[0] // 16 * 16, s.shape[1] // 16 * 16) for s in screens)
    return sizes.most_common(1)[0][0]


def of_size(screens: list[np.ndarray], h: int, w: int) -> np.ndarray:
    keep = [s[:h, :w] for s in screens if s.shape[0] >= h and s.shape[1] >= w]
    return np.stack(keep) if keep else np.zeros((0, h, w, 3), np.uint8)


def mosaic(patches: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """``n`` screens of (h, w) made of the patches side by side, in order (cropped at the
    right and bottom edges)."""
    s = patches.shape[1]
    rows, cols = -(-h // s), -(-w // s)
    need = n * rows * cols
    reps = -(-need // len(patches))
    p = np.concatenate([patches] * reps)[:need].reshape(n, rows, cols, s, s, 3)
    return p.transpose(0, 1, 3, 2, 4, 5).reshape(n, rows * s, cols * s, 3)[:, :h, :w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="quality_swd.py's --out folder")
    ap.add_argument("--spatial", default="spatial")
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
    h, w = common_size(held_all)
    held, train = of_size(held_all, h, w), of_size(train_all, h, w)
    print(f"screens {w}x{h}: {len(held)} held back, {len(train)} training")
    if len(held) < 2:
        sys.exit("quality_screens: fewer than 2 held-back screens of the commonest size")
    work = args.work / "screens"
    held_q = quantized(held, work / "q_held", cleanup=0)


    def row(name: str, images: np.ndarray, q: np.ndarray) -> str:
        r = swd(q, held_q, seed=args.seed)
        levels = " / ".join(f"{v:.0f}" for v in r["levels"])
        return f"| {name} | {len(images)} | {r['swd']:.1f} | {levels} | {grid(q)} |"

    rows = ["| screens | n | SWD after quantize vs held back | per level (fine → coarse) | "
            "border/interior on the grid / best off it |", "|---|---|---|---|---|",
            f"| real held-back screens (no clean-up) | {len(held)} | - | - | {grid(held_q)} |"]
    if len(train) >= 2:
        rows.append(row("real training screens (floor)", train,
                        quantized(train, work / "q_train", cleanup=0)))
    spatial_ck = args.work / args.spatial / "ckpt.pt"
    if spatial_ck.exists():
        G, _ = load_generator(spatial_ck)
        big = sample_images(G, args.n, seed=args.seed + 7, width=w, height=h)
        rows.append(row(f"{args.spatial}: whole screens", big,
                        quantized(big, work / f"q_{args.spatial}")))
        from PIL import Image
        Image.fromarray(np.concatenate(list(big[:4]), 1)).save(work / f"{args.spatial}_4.png")
    patch_ck = args.work / args.patch / "ckpt.pt"
    if patch_ck.exists():
        G, _ = load_generator(patch_ck)
        s = G.cfg.height
        per = -(-h // s) * -(-w // s)
        tiles = sample_images(G, args.n * per, seed=args.seed + 7)
        mos = mosaic(tiles, args.n, h, w)
        rows.append(row(f"{args.patch}: mosaics of {s}x{s} samples", mos,
                        quantized(mos, work / f"q_{args.patch}")))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
