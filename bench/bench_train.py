"""Training throughput: the reference DCGAN step vs tilegan's trainer step, same process.

Reference = the pytorch/examples DCGAN recipe: plain fp32 eager, contiguous (NCHW) tensors,
G and D with batch norm, BCE on sigmoid outputs, D run separately on the real and the fake
batch, Adam 2e-4 β1 0.5, denormals not flushed.
Ours = ``stages.train.Trainer.step`` at the same widths (ngf = ndf = 64), image size and batch,
transposed convs and one full-size D; our defaults otherwise (hinge loss, spectral norm,
DiffAugment, EMA, channels_last, flushed denormals, precision "auto" = fp32 on CPUs without
native bf16).  A roofline line then counts both steps' arithmetic (torch's FLOP counter) and
this CPU's fp32 GEMM peak: the most any fp32 trainer doing our arithmetic could reach here.

Both train on the same patches (the example corpus cut by the crop stage, or random blocks when
crop is unavailable).  Steps alternate in blocks so machine-load drift hits both alike; the
figure is the median img/s over blocks.

    python bench/bench_train.py [--size 64] [--batch 64] [--ngf 64] [--blocks 6] [--steps 4]
                                [--compile] [--precision auto|fp32|bf16] [--no-defaults]

It also measures our trainer at its own defaults (smaller networks, batch 16), which is what a
user gets, and prints that beside the reference; the ratio line stays same-architecture.

Last line: ``train: ours=<x> img/s baseline=<y> img/s ratio=<r>``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def reference_nets(nz: int, ngf: int, ndf: int, nc: int) -> tuple[nn.Module, nn.Module]:
    """The classic 64×64 DCGAN pair (transposed convs + BN; strided convs + BN + sigmoid)."""
    def up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
        return [nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU(True)]

    def down(cin: int, cout: int, bn: bool = True) -> list[nn.Module]:
        return ([nn.Conv2d(cin, cout, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(cout)] if bn else [])
                + [nn.LeakyReLU(0.2, True)])

    G = nn.Sequential(*up(nz, ngf * 8, True), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2),
                      *up(ngf * 2, ngf), nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(*down(nc, ndf, bn=False), *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4),
                      *down(ndf * 4, ndf * 8), nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                      nn.Sigmoid())
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return G, D


class Reference:
    """One pytorch/examples-style DCGAN step."""

    def __init__(self, nz: int, ngf: int, ndf: int, nc: int, seed: int = 0):
        torch.manual_seed(seed)
        self.nz = nz
        self.G, self.D = reference_nets(nz, ngf, ndf, nc)
        self.optG = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optD = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.bce = nn.BCELoss()

    def step(self, real_u8: np.ndarray) -> tuple[float, float]:
        real = torch.from_numpy(real_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        b = real.shape[0]
        self.D.zero_grad()
        out = self.D(real).view(-1)
        err_real = self.bce(out, torch.ones(b))
        err_real.backward()
        fake = self.G(torch.randn(b, self.nz, 1, 1))
        out = self.D(fake.detach()).view(-1)
        err_fake = self.bce(out, torch.zeros(b))
        err_fake.backward()
        self.optD.step()
        self.G.zero_grad()
        out = self.D(fake).view(-1)
        err_g = self.bce(out, torch.ones(b))
        err_g.backward()
        self.optG.step()
        return float((err_real + err_fake).detach()), float(err_g.detach())


def load_patches(size: int) -> np.ndarray:
    try:
        from stages import crop

        with tempfile.TemporaryDirectory() as d:
            crop.run({"images": [ROOT / "examples" / "screens"]},
                     crop.Params(patch_size=size), Path(d))
            return np.load(Path(d) / "patches.npy")
    except Exception as e:  # crop missing or failing: throughput barely depends on content
        print(f"(crop unavailable: {e}; using random blocky patches)", file=sys.stderr)
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (512, size // 8, size // 8, 3), dtype=np.uint8)
        return a.repeat(8, 1).repeat(8, 2)


def step_gflop(step_fn) -> float:
    """Matmul/convolution arithmetic (forward and backward) of one call of ``step_fn``, GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step_fn()
    return fc.get_total_flops() / 1e9


def gemm_peak_gflops(n: int = 1536, reps: int = 5) -> float:
    """Best fp32 GEMM rate of this CPU at the current thread count (median of reps), GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=6, help="alternating measurement blocks")
    ap.add_argument("--steps", type=int, default=4, help="steps per block")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-defaults", dest="defaults", action="store_false",
                    help="skip the extra measurement of our trainer at its own defaults")
    args = ap.parse_args()

    from stages import train

    patches = load_patches(args.size)
    n = len(patches)
    print(f"patches: {patches.shape}, threads: {torch.get_num_threads()}, "
          f"native bf16: {train.cpu_has_native_bf16()}")

    ref = Reference(100, args.ngf, args.ngf, 3)
    # same architecture as the reference: its widths, batch, transposed-conv generator and one
    # full-size discriminator
    p = train.Params(size=args.size, batch=args.batch, ngf=args.ngf, ndf=args.ngf,
                     upsample="deconv", d_scales=1, precision=args.precision,
                     compile=args.compile, steps=10 ** 6)
    ours = train.Trainer(p, train.gan_config(p, 3), torch.device("cpu"))
    state = {"ref": 0, "ours": 0, "defaults": 0}

    def run_ref(k: int) -> float:
        torch.set_flush_denormal(False)               # the reference does not flush denormals
        t = time.perf_counter()
        for _ in range(k):
            idx = train.batch_indices(1, state["ref"], n, args.batch)
            ref.step(patches[np.sort(idx)])
            state["ref"] += 1
        return args.batch * k / (time.perf_counter() - t)

    def timed_steps(trainer, key: str, k: int) -> float:
        """img/s of k steps of one of our trainers (flushed denormals, as train runs)."""
        torch.set_flush_denormal(True)
        bs = trainer.params.batch
        t = time.perf_counter()
        for _ in range(k):
            idx = train.batch_indices(1, state[key], n, bs)
            trainer.step(state[key], patches[np.sort(idx)])
            state[key] += 1
        return bs * k / (time.perf_counter() - t)

    def run_ours(k: int) -> float:
        return timed_steps(ours, "ours", k)

    t0 = time.perf_counter()
    run_ref(args.warmup)
    run_ours(args.warmup)
    print(f"warm-up done in {time.perf_counter() - t0:.1f} s")
    r_ref, r_ours = [], []
    for b in range(args.blocks):
        order = (run_ref, run_ours) if b % 2 == 0 else (run_ours, run_ref)
        for f in order:
            v = f(args.steps)
            (r_ref if f is run_ref else r_ours).append(v)
        print(f"block {b}: reference {r_ref[-1]:.1f} img/s, ours {r_ours[-1]:.1f} img/s",
              flush=True)
    base, mine = float(np.median(r_ref)), float(np.median(r_ours))
    if args.defaults:                              # what a user gets: each at its own defaults
        d = train.Params(size=args.size, compile=args.compile, steps=10 ** 6)
        mine_d = train.Trainer(d, train.gan_config(d, 3), torch.device("cpu"))
        k = args.steps * max(1, args.batch // d.batch)        # about as many images per block
        timed_steps(mine_d, "defaults", k)                    # warm-up
        r_d = [timed_steps(mine_d, "defaults", k) for _ in range(args.blocks)]
        print(f"at each one's defaults: ours (ngf {d.ngf}, ndf {d.ndf}, {d.upsample}, batch "
              f"{d.batch}) {np.median(r_d):.1f} img/s vs reference (ngf {args.ngf}, batch "
              f"{args.batch}) {base:.1f} img/s = {np.median(r_d) / base:.1f}x more images seen "
              f"per second (not the same network: see docs/training.md for the quality)")
    # roofline: how far can any fp32 trainer doing this arithmetic get on this CPU?
    idx = np.sort(train.batch_indices(2, 0, n, args.batch))
    f_ref = step_gflop(lambda: ref.step(patches[idx]))
    f_ours = step_gflop(lambda: ours.step(0, patches[idx]))
    peak = gemm_peak_gflops()
    ref_rate = f_ref * base / args.batch                          # GFLOP/s the reference achieves
    print(f"roofline: reference step {f_ref:.1f} GFLOP at {ref_rate:.0f} GFLOP/s, ours {f_ours:.1f} "
          f"GFLOP; fp32 GEMM peak here {peak:.0f} GFLOP/s -> ours at peak would be "
          f"{peak / f_ours * args.batch:.0f} img/s = at most {peak / f_ours * args.batch / base:.2f}x "
          f"the reference")
    print(f"train: ours={mine:.1f} img/s baseline={base:.1f} img/s ratio={mine / base:.2f}")


if __name__ == "__main__":
    main()
