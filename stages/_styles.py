"""Which game's style an image is in: a small nearest-neighbour index of the training patches.

A corpus of several games (crop's ``patch_games.npy``) trains one unconditional generator by
default; its samples each still look like one game.  :class:`StyleIndex` keeps up to
:data:`PER_STYLE` thumbnails of each game's training patches (16×16 block means, RGB, stored
in the checkpoint) and names an image's style by a vote of its :data:`K` nearest thumbnails.
The sample stage uses it to record each sample's style (export then makes one level per
style) and to draw ``--like NAME`` from an unconditional model by keeping only the samples
in that style.

Measured on the example corpus (docs/training.md, "One style at a time"): the default model's
samples named by this index score, per style, as well as or better than a conditional
model's ``--like`` samples against that style's held-back patches on two of three styles.

Pure numpy (PIL for images whose sides are not multiples of the thumbnail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

#: Thumbnail side in pixels: an image is compared by its THUMB x THUMB block means.
THUMB = 16
#: Training thumbnails kept per style (a seeded, even pick when a style has more).
PER_STYLE = 256
#: Nearest thumbnails that vote on an image's style.
K = 5


def thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, THUMB*THUMB*3): RGB block means (area resampling
    when the sides are not multiples of THUMB)."""
    x = np.asarray(images)[..., :3]
    n, h, w = x.shape[:3]
    if h % THUMB == 0 and w % THUMB == 0:
        t = x.reshape(n, THUMB, h // THUMB, THUMB, w // THUMB, 3).mean(axis=(2, 4), dtype=np.float32)
    else:
        from PIL import Image

        t = np.stack([np.asarray(Image.fromarray(im).resize((THUMB, THUMB), Image.BOX))
                      for im in x]).astype(np.float32)
    return t.reshape(n, -1)


@dataclass(frozen=True)
class StyleIndex:
    """Thumbnails of the training patches of each style.

    Attributes
    ----------
    names : tuple of str
        The styles (games), label ``i`` is ``names[i]``.
    thumbs : ndarray, shape (M, THUMB, THUMB, 3), uint8
    labels : ndarray, shape (M,), int64
    patch : int
        Side of the training patches: larger images are judged patch by patch.
    """

    names: tuple
    thumbs: np.ndarray
    labels: np.ndarray
    patch: int

    @classmethod
    def build(cls, patches: np.ndarray, labels: np.ndarray, names: list, *,
              per_style: int = PER_STYLE, seed: int = 0) -> Optional["StyleIndex"]:
        """From training patches uint8 (N, S, S, C) and their games (N,); None with fewer
        than two styles present (nothing to tell apart)."""
        labels = np.asarray(labels, np.int64)
        present = np.unique(labels)
        if len(present) < 2 or len(patches) != len(labels):
            return None
        rng = np.random.default_rng(seed)
        keep = []
        for k in present:
            idx = np.flatnonzero(labels == k)
            keep.append(np.sort(rng.choice(idx, per_style, replace=False))
                        if len(idx) > per_style else idx)
        pick = np.concatenate(keep)
        t = thumbnails(patches[pick]).round().clip(0, 255).astype(np.uint8)
        return cls(tuple(str(n) for n in names), t.reshape(-1, THUMB, THUMB, 3),
                   labels[pick], int(patches.shape[1]))

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Each image's style (int64 (N,), an index into ``names``): the commonest label among
        its K nearest thumbnails (ties to the nearer); an image larger than the training
        patches is cut into patch-size windows that vote the same way."""
        images = np.asarray(images)
        n, h, w = images.shape[:3]
        s = self.patch
        if h > s or w > s:
            rows, cols = max(1, h // s), max(1, w // s)
            windows = np.stack([images[:, r * s:(r + 1) * s, c * s:(c + 1) * s]
                                for r in range(rows) for c in range(cols)], axis=1)
            votes = self.classify(windows.reshape(-1, *windows.shape[2:])).reshape(n, -1)
            return np.array([np.bincount(v, minlength=len(self.names)).argmax() for v in votes],
                            np.int64)
        q = thumbnails(images)
        ref = self.thumbs.reshape(len(self.thumbs), -1).astype(np.float32)
        d = (q * q).sum(1)[:, None] - 2.0 * q @ ref.T + (ref * ref).sum(1)[None, :]
        k = min(K, len(ref))
        near = np.argsort(d, axis=1, kind="stable")[:, :k]
        out = np.empty(n, np.int64)
        for i, row in enumerate(self.labels[near]):
            counts = np.bincount(row, minlength=len(self.names))
            best = np.flatnonzero(counts == counts.max())
            out[i] = next(int(lab) for lab in row if lab in best)       # ties: the nearer
        return out

    def to_state(self) -> dict:
        """Checkpoint form (plain values and tensors: loadable with ``weights_only=True``)."""
        import torch

        return {"names": list(self.names), "thumbs": torch.from_numpy(self.thumbs.copy()),
                "labels": torch.from_numpy(self.labels.copy()), "patch": int(self.patch)}

    @classmethod
    def from_state(cls, state: Any) -> Optional["StyleIndex"]:
        """Back from :meth:`to_state`; None for a checkpoint without one (or a malformed one)."""
        try:
            names = tuple(str(n) for n in state["names"])
            thumbs = np.asarray(state["thumbs"].numpy(), np.uint8)
            labels = np.asarray(state["labels"].numpy(), np.int64)
            patch = int(state["patch"])
        except (TypeError, KeyError, AttributeError, ValueError):
            return None
        if (thumbs.ndim != 4 or thumbs.shape[1:] != (THUMB, THUMB, 3) or len(thumbs) != len(labels)
                or not len(names) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(names)):
            return None
        return cls(names, thumbs, labels, patch)
