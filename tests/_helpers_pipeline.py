"""The tiny pipeline.toml that the end-to-end test and the kill drill run on."""
from __future__ import annotations


def tiny_pipeline_toml(*, steps: int, max_minutes: float, grid_every: int, swd_every: int) -> str:
    """A pipeline.toml for a run of seconds on ``screens/``: 32-px patches, a tiny GAN on the
    CPU trained for ``steps`` steps (checkpoint every 2), NES palette, 16-px tiles, 12x6 levels."""
    return f"""
[pipeline]
out = "out"
[scrape]
input = "screens"
[crop]
patch_size = 32
stride = 16
max_patches = 400
[train]
size = 32
steps = {steps}
batch = 8
ngf = 8
ndf = 8
max_minutes = {max_minutes!r}
ckpt_every = 2
grid_every = {grid_every}
swd_every = {swd_every}
log_every = 1
device = "cpu"
[sample]
n = 4
[quantize]
palette = "nes"
[slice]
tile_size = 16
[export]
level_width = 12
level_height = 6
"""
