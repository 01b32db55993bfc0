"""Equal-CPU-time sample quality: the reference DCGAN vs tilegan's defaults vs the real floor.

The example screens are split by screen (every 5th screen held back) and cut by the crop
stage, so held-back patches share no pixels with training patches.  Each configuration then
trains in its own process, all at the same time and one thread each (so machine-load drift
hits them alike), for the same wall-clock budget.  Afterwards each draws as many samples as
there are held-back patches (at most 512) and we report:

* SWD on Laplacian-pyramid 7×7 neighbourhoods (ProGAN recipe, ×1e3) against the held-back
  patches; the floor is the SWD of real training patches against the same held-back set;
* colours per 16×16 tile: the share of tiles with more than 4 colours after mapping every
  pixel to its nearest NES colour (quantize stage, no clean-up), and after the quantize
  stage's default pixel-art clean-up.

With ``--after-quantize`` it also reports the art the user gets (issue #16): every sample set
through the quantize stage with its defaults, against the held-back patches through the same
quantize with no clean-up (palette-fair), beside the floor in that same space (real training
patches, no clean-up, against the same set); per pyramid level (64/32/16 px at size 64); the
share of isolated pixels (unlike all 8 neighbours) and the mean colours per 16×16 tile.

With ``--after-quantize`` the table also has SWD **after the tile budget**: the quantised
samples' 16×16 cells through slice's defaults (``learn_dictionary`` + seam- and
texture-aware ``rebuild``), i.e. the screens the user's maps show. A conditional
configuration (``--extra cond='{"conditional": "on"}'``) also draws every style on its own, and each style is scored against that style's
held-back patches (per-style SWD after quantize), beside the samples of the first
unconditional configuration against the same patches.

``--screens DIR`` takes another corpus (default: ``examples/screens``).

    python bench/quality_swd.py [--minutes 10] [--configs reference,ours] [--out DIR]
           [--extra name='{"batch": 32}' ...] [--after-quantize] [--screens DIR]

e.g. ``--extra palette='{"output": "palette"}' --extra spatial='{"spatial_noise": true}'``
(``--extra cond='{"conditional": "on"}'`` trains on the crop artifact's per-patch games; a
conditional model's samples draw each style in its share of the training patches).

Configurations: ``reference`` (pytorch/examples DCGAN: ngf=ndf=64, BCE, Adam 2e-4 β1 0.5, fp32,
BN in both nets, samples in train-mode BN as that example draws them), ``ours`` (stages.train
defaults), and any ``--extra NAME=JSON`` (our defaults with those overrides).
Last line: ``quality_swd: ours=<swd> baseline=<swd> ratio=<ours/ref>`` (lower is better).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prepare(work: Path, size: int, folder: Path) -> tuple[Path, Path]:
    """Crop train / held-back screens separately; returns (train.npy, holdout.npy)."""
    from stages import crop
    from stages._common import IMAGE_SUFFIXES

    screens = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    held = screens[::5]
    kept = [p for p in screens if p not in held]
    out = {}
    for name, files in (("train", kept), ("holdout", held)):
        d = work / f"crop_{name}"
        d.mkdir(parents=True, exist_ok=True)
        crop.run({"images": files}, crop.Params(patch_size=size), d)
        out[name] = d / "patches.npy"
    return out["train"], out["holdout"]


# --------------------------------------------------------------------------- workers
def worker_reference(train_npy: Path, out: Path, minutes: float, n_out: int, seed: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_train import Reference

    from stages import train
    from stages._gan import to_uint8

    patches = np.load(train_npy)
    ref = Reference(100, 64, 64, patches.shape[-1], seed=seed)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < minutes * 60:
        idx = train.batch_indices(seed, step, len(patches), 64)
        ref.step(patches[np.sort(idx)])
        step += 1
    secs = time.perf_counter() - t0
    z = torch.randn(n_out, 100, 1, 1, generator=torch.Generator().manual_seed(seed + 99))
    imgs = []
    with torch.no_grad():                                 # train-mode BN, batches of 64
        for i in range(0, n_out, 64):
            imgs.append(to_uint8(ref.G(z[i:i + 64])))
    np.save(out / "samples.npy", np.concatenate(imgs))
    return {"steps": step, "seconds": secs, "img_per_s": 64 * step / secs}


def worker_ours(train_npy: Path, out: Path, minutes: float, n_out: int, seed: int,
                overrides: dict, noise_scale: float = 1.0) -> dict:
    import torch

    from stages import train
    from stages.sample import generate, load_generator, sample_images

    kw = {"steps": 10 ** 7, "max_minutes": minutes, "swd_every": -1, "swd_holdout": 0.0,
          "ckpt_every": 500, "grid_every": 500, "seed": seed, **overrides}
    params = train.Params(**kw)
    s = train.run({"patches": [train_npy.parent]}, params, out)   # the crop artifact (games)
    G, _ = load_generator(out / "ckpt.pt", use_ema=True)
    np.save(out / "samples.npy", sample_images(G, n_out, seed=seed + 99, noise_scale=noise_scale))
    for i, name in enumerate(G.cfg.classes or ()):                  # one style at a time
        np.save(out / f"style_{i:02d}.npy", sample_images(G, n_out, seed=seed + 99, like=name,
                                                          noise_scale=noise_scale))
    if G.cfg.n_classes:
        (out / "styles.json").write_text(json.dumps(list(G.cfg.classes)))
    if params.ema > 0 and G.cfg.g_arch == "dcgan" and not G.cfg.n_classes:   # raw weights
        z = torch.randn(n_out, G.cfg.nz, generator=torch.Generator().manual_seed(seed + 99))
        G_raw, _ = load_generator(out / "ckpt.pt", use_ema=False)
        np.save(out / "samples_raw.npy", generate(G_raw, z * noise_scale, batch=64))
    return {"steps": s["steps"], "seconds": s["train_seconds"], "img_per_s": s["img_per_s"]}


# --------------------------------------------------------------------------- scoring
def nes_colour_shares(images: np.ndarray, work: Path) -> tuple[float, float]:
    """Share of 16×16 tiles with > 4 colours after the quantize stage (no clean-up, default)."""
    from stages import quantize
    from stages._common import load_image, save_png
    from stages._metrics import colours_per_tile, share_over

    src = work / "q_src"
    src.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images[:128]):
        save_png(src / f"s_{i:04d}.png", im)
    res = []
    for cleanup in (0, quantize.Params().cleanup):
        dst = work / f"q_{cleanup}"
        dst.mkdir(parents=True, exist_ok=True)
        quantize.run({"images": [src]}, quantize.Params(cleanup=cleanup), dst)
        q = np.stack([load_image(p) for p in sorted(dst.glob("s_*.png"))])
        res.append(share_over(colours_per_tile(q), 4))
    return res[0], res[1]


def quantized(images: np.ndarray, work: Path, *, cleanup: "int | None" = None,
              reference: "Path | None" = None) -> np.ndarray:
    """``images`` through the quantize stage (default palette; ``cleanup`` None = its default;
    ``reference``: the crop artifact whose colours quantize draws to first, as the pipeline
    passes it), back as RGB uint8 arrays in the same order."""
    from stages import quantize
    from stages._common import load_image, save_png

    src, dst = work / "src", work / "dst"
    src.mkdir(parents=True, exist_ok=True)
    dst.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        save_png(src / f"s_{i:04d}.png", im)
    p = quantize.Params() if cleanup is None else quantize.Params(cleanup=cleanup)
    inputs = {"images": [src]}
    if reference is not None:
        inputs["reference"] = [reference]
    quantize.run(inputs, p, dst)
    return np.stack([load_image(f) for f in sorted(dst.glob("s_*.png"))])


def tile_budget(images: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Quantised RGB images rebuilt from a tile budget learned on all their 16×16 cells, as
    slice does in the pipeline (automatic K, texture weight, the seam weight calibrated against
    the border/interior ratio of ``real``, the real training patches): what the maps show."""
    from stages.slice import Params, Screen, rebuild_screens
    from tilesets import dictionary as D
    from tilesets.cells import decode_cells

    p = Params()
    rgba = np.concatenate([images, np.full(images.shape[:3] + (1,), 255, np.uint8)], -1)
    cells = np.concatenate([D.grid_tiles(im, 16).reshape(-1, 16, 16, 4) for im in rgba])
    dic = D.learn_dictionary(cells, seed=p.seed)
    target = D.seam_ratio(list(real), 16)["ratio"]
    maps, _ = rebuild_screens([Screen(f"s{i}", im, None) for i, im in enumerate(rgba)], dic, p,
                              seam_target=target)
    return np.stack([D.render(dic.tiles, *decode_cells(m))[..., :3] for m in maps])


def after_quantize_report(train_pick: np.ndarray, hold: np.ndarray, samples: dict,
                          work: Path, seed: int) -> list[str]:
    """Markdown rows of the art the user gets: SWD after quantize (levels) and after the tile
    budget, the floor in the same space, isolated-pixel share and colours per tile;
    ``samples`` {name: raw uint8}."""
    from stages._metrics import colours_per_tile, isolated_share, swd

    crop = work / "crop_train"           # quantize draws to its colours, as in the pipeline
    hold_q = quantized(hold, work / "q_hold0", cleanup=0, reference=crop)
    floor = swd(quantized(train_pick, work / "q_train0", cleanup=0, reference=crop), hold_q,
                seed=seed)
    raw_floor = swd(train_pick, hold, seed=seed)["swd"]

    def levels(r: dict) -> str:
        return " / ".join(f"{v:.0f}" for v in r["levels"])

    sys.path.insert(0, str(ROOT / "bench"))
    from quality_tiles import grid_alignment_text as grid

    out = ["| images | SWD raw | SWD after quantize | per level (fine → coarse) | "
           "SWD after the tile budget | isolated px after quantize | colours / 16-px tile "
           "after quantize | border/interior on the 16-px grid / best off it |",
           "|---|---|---|---|---|---|---|---|",
           f"| real: train vs held back, both quantized with no clean-up (floor) | "
           f"{raw_floor:.1f} | {floor['swd']:.1f} | {levels(floor)} | - | "
           f"{isolated_share(hold_q):.2%} | {colours_per_tile(hold_q).mean():.2f} | "
           f"{grid(hold_q)} |"]
    for name, fake in samples.items():
        fq = quantized(fake, work / f"q_after_{name}", reference=crop)
        r = swd(fq, hold_q, seed=seed)
        t = swd(tile_budget(fq, train_pick), hold_q, seed=seed)
        out.append(f"| {name} (quantize defaults) | {swd(fake, hold, seed=seed)['swd']:.1f} | "
                   f"{r['swd']:.1f} ({r['swd'] / floor['swd']:.2f}× floor) | {levels(r)} | "
                   f"{t['swd']:.1f} ({t['swd'] / floor['swd']:.2f}×; {levels(t)}) | "
                   f"{isolated_share(fq):.2%} (raw {isolated_share(fake):.1%}) | "
                   f"{colours_per_tile(fq).mean():.2f} | {grid(fq)} |")
    return out


def per_style_report(hold: np.ndarray, hold_games: np.ndarray, game_names: list,
                     configs: dict, work: Path, seed: int) -> list[str]:
    """Markdown rows: each style of every conditional configuration, after quantize, against
    that style's held-back patches (quantized, no clean-up), beside the samples of the first
    unconditional configuration of ours (e.g. ``--extra uncond='{"conditional": "off"}'``)
    against the same patches."""
    from stages._metrics import swd

    crop = work / "crop_train"
    out: list[str] = []
    uncond = next((n for n in configs if n != "reference" and not (work / n / "styles.json").exists()
                   and (work / n / "samples.npy").exists()), None)
    base_q: "np.ndarray | None" = None
    for name in configs:
        styles_file = work / name / "styles.json"
        if not styles_file.exists():
            continue
        styles = json.loads(styles_file.read_text())
        if not out:
            out = ["| config | style | held-back patches | SWD after quantize, this style | "
                   f"{uncond or 'an unconditional model'} against the same patches |",
                   "|---|---|---|---|---|"]
        for i, style in enumerate(styles):
            if style not in game_names:
                continue
            mine = hold[hold_games == game_names.index(style)]
            if len(mine) < 2:
                out.append(f"| {name} | {style} | {len(mine)} | too few to score | - |")
                continue
            ref = quantized(mine, work / f"q_style_hold_{i:02d}", cleanup=0, reference=crop)
            fq = quantized(np.load(work / name / f"style_{i:02d}.npy"),
                           work / f"q_style_{name}_{i:02d}", reference=crop)
            r = swd(fq, ref, seed=seed)
            base = "-"
            if uncond is not None:
                if base_q is None:
                    base_q = quantized(np.load(work / uncond / "samples.npy"),
                                       work / "q_style_uncond", reference=crop)
                base = f"{swd(base_q, ref, seed=seed)['swd']:.1f}"
            out.append(f"| {name} | {style} | {len(mine)} | {r['swd']:.1f} | {base} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--configs", default="reference,ours")
    ap.add_argument("--extra", action="append", default=[], help="NAME=JSON overrides of ours")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--screens", type=Path, default=ROOT / "examples" / "screens",
                    help="the corpus (a folder of screens; every 5th held back)")
    ap.add_argument("--after-quantize", action="store_true",
                    help="also report SWD, isolated pixels and colours per tile after quantize")
    ap.add_argument("--noise-scale", type=float, default=None,
                    help="our samples' noise scale (default: `pipeline sample`'s, what users get)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--train-npy", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-out", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:                                       # child process: train one config
        import torch

        torch.set_num_threads(1)
        args.out.mkdir(parents=True, exist_ok=True)
        if args.worker == "reference":
            info = worker_reference(args.train_npy, args.out, args.minutes, args.n_out, args.seed)
        else:
            info = worker_ours(args.train_npy, args.out, args.minutes, args.n_out, args.seed,
                               json.loads(args.overrides), args.noise_scale)
        (args.out / "info.json").write_text(json.dumps(info))
        return

    from stages._metrics import colours_per_tile, share_over, swd

    if args.noise_scale is None:
        from stages import sample
        args.noise_scale = sample.Params().noise_scale
    work = args.out or Path(tempfile.mkdtemp(prefix="tilegan_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    train_npy, hold_npy = prepare(work, args.size, args.screens)
    train_p, hold = np.load(train_npy), np.load(hold_npy)
    n_out = min(512, len(hold))
    hold_pick = np.sort(np.random.default_rng(args.seed).choice(len(hold), n_out, replace=False))
    hold = hold[hold_pick]
    print(f"train patches {len(train_p)} (from {len(list((work / 'crop_train' / 'screens').glob('*.png')))} "
          f"screens), held-back patches {n_out}; {args.minutes} min per config, all in parallel; "
          f"our samples at noise scale {args.noise_scale:g}")

    configs = {name: {} for name in args.configs.split(",") if name}
    for e in args.extra:
        name, _, js = e.partition("=")
        configs[name] = json.loads(js)
    procs = {}
    for name, ov in configs.items():
        cmd = [sys.executable, __file__, "--worker", "reference" if name == "reference" else "ours",
               "--train-npy", str(train_npy), "--out", str(work / name), "--minutes",
               str(args.minutes), "--n-out", str(n_out), "--seed", str(args.seed),
               "--overrides", json.dumps(ov), "--noise-scale", str(args.noise_scale)]
        procs[name] = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for name, pr in procs.items():
        if pr.wait() != 0:
            raise SystemExit(f"{name} failed with exit code {pr.returncode}")

    rows = []
    train_pick = train_p[np.random.default_rng(args.seed + 1).choice(len(train_p), n_out, replace=False)]
    floor = swd(train_pick, hold, seed=args.seed)["swd"]
    real_share = share_over(colours_per_tile(hold), 4)
    rows.append(("real (floor)", floor, "-", "-", *nes_colour_shares(hold, work / "q_real"),
                 real_share))
    for name in configs:
        fake = np.load(work / name / "samples.npy")
        info = json.loads((work / name / "info.json").read_text())
        rows.append((name, swd(fake, hold, seed=args.seed)["swd"], info["steps"],
                     round(info["img_per_s"], 1), *nes_colour_shares(fake, work / f"q_{name}"),
                     share_over(colours_per_tile(fake), 4)))
        if (work / name / "samples_raw.npy").exists():
            raw = np.load(work / name / "samples_raw.npy")
            rows.append((f"{name}, raw G (no EMA)", swd(raw, hold, seed=args.seed)["swd"],
                         info["steps"], round(info["img_per_s"], 1),
                         *nes_colour_shares(raw, work / f"q_{name}_raw"),
                         share_over(colours_per_tile(raw), 4)))
    print("\n| config | SWD (lower is better) | steps | img/s | tiles > 4 NES colours "
          "(nearest) | tiles > 4 (quantize default) | tiles > 4 raw |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]} | {r[4]:.0%} | {r[5]:.0%} | {r[6]:.0%} |")
    for name, ov in configs.items():
        if ov:
            print(f"{name}: ours with {json.dumps(ov)}")
    if args.after_quantize:
        print("\nAfter quantize (the art the user gets):\n")
        samples = {name: np.load(work / name / "samples.npy") for name in configs}
        print("\n".join(after_quantize_report(train_pick, hold, samples, work, args.seed)))
        from tilesets.artifacts import Patches

        held_art = Patches.load(hold_npy.parent)
        if held_art.games is not None and len(held_art.games) == len(np.load(hold_npy, mmap_mode="r")):
            rows_style = per_style_report(hold, np.asarray(held_art.games)[hold_pick],
                                          list(held_art.game_names), configs, work, args.seed)
            if rows_style:
                print("\nOne style at a time (after quantize):\n")
                print("\n".join(rows_style))
    print(f"(work dir: {work})")
    ours = next((r[1] for r in rows if r[0] == "ours"), float("nan"))
    base = next((r[1] for r in rows if r[0] == "reference"), float("nan"))
    print(f"floor (real vs real) = {floor:.1f}; ours / floor = {ours / floor:.2f}")
    print(f"quality_swd: ours={ours:.1f} baseline={base:.1f} ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
