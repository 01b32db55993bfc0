"""Sampling speed on one CPU core: ms per 64×64 image, ours vs a naive baseline.

Ours = ``stages.sample.generate`` (eval mode, inference_mode, batched) on the train stage's
default architecture (its ``ngf`` and ``upsample``; ``--ngf 32 --upsample deconv`` for others).  Baseline = the same generator called one image at a time with autograd
on, the way a quick script usually samples.  The target (issue 3) is at most 5 ms per image.

    python bench/bench_sample.py [--n 256] [--batch 64] [--ngf N] [--upsample deconv|nearest] [--repeats 7]

Last line: ``sample: ours=<ms/img> baseline=<ms/img> ratio=<baseline/ours>``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    from stages.train import Params

    ap.add_argument("--ngf", type=int, default=Params().ngf)
    ap.add_argument("--upsample", default=Params().upsample)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from stages._gan import GANConfig, Generator, to_uint8
    from stages.sample import generate

    torch.manual_seed(0)
    G = Generator(GANConfig(height=args.size, width=args.size, ngf=args.ngf,
                            upsample=args.upsample)).eval()
    z = torch.randn(args.n, 100)

    def ours() -> None:
        generate(G, z, batch=args.batch)

    def naive() -> None:
        for i in range(0, args.n // 4):                      # a quarter of n: it is slow
            to_uint8(G(z[i:i + 1]))

    ours()
    naive()
    t_ours, t_naive = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours()
        t_ours.append((time.perf_counter() - t) * 1e3 / args.n)
        t = time.perf_counter()
        naive()
        t_naive.append((time.perf_counter() - t) * 1e3 / (args.n // 4))
    mo, mb = float(np.median(t_ours)), float(np.median(t_naive))
    print(f"one thread, {args.size}x{args.size}, ngf {args.ngf} ({args.upsample}), batch {args.batch}: "
          f"ours {mo:.2f} ms/img (target <= 5), naive per-image {mb:.2f} ms/img")
    print(f"sample: ours={mo:.2f} baseline={mb:.2f} ratio={mb / mo:.2f}")


if __name__ == "__main__":
    main()
