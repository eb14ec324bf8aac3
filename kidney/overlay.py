"""A PNG of axial and coronal slices with truth and prediction overlaid — no plotting library needed.

Layout (2 × 2 panels): top = axial slice, bottom = coronal slice; left = ground truth, right =
prediction. CT shown in a soft-tissue window ``[-160, 240]`` HU; kidney green, tumour red, cyst
yellow, blended at 45 %. The axial slice is the one with the most tumour (else kidney) in the truth
(or the prediction when no truth is given); the coronal slice likewise. Coronal rows are stretched to
the slice spacing so anatomy has its real proportions.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

COLOURS = {1: (40, 200, 60), 2: (230, 40, 40), 3: (240, 220, 40)}

__all__ = ["write_png", "overlay_png", "render_overlay"]


def write_png(path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3) uint8`` image as an 8-bit RGB PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _gray(hu):
    g = np.clip((np.asarray(hu, np.float32) + 160.0) / 400.0, 0, 1) * 255
    return np.repeat(g[..., None], 3, axis=-1)


def _blend(hu, labels, alpha=0.45):
    img = _gray(hu)
    for lab, col in COLOURS.items():
        m = labels == lab
        img[m] = (1 - alpha) * img[m] + alpha * np.array(col, np.float32)
    return img.astype(np.uint8)


def _stretch_rows(img, factor):
    n = max(1, int(round(img.shape[0] * factor)))
    rows = np.minimum((np.arange(n) / factor).astype(int), img.shape[0] - 1)
    return img[rows]


def _best_index(labels, axis):
    for wanted in ((2,), (1, 2, 3)):
        m = np.isin(labels, wanted)
        counts = m.sum(axis=tuple(a for a in range(3) if a != axis))
        if counts.max() > 0:
            return int(np.argmax(counts))
    return labels.shape[axis] // 2


def render_overlay(hu: np.ndarray, truth: Optional[np.ndarray], pred: np.ndarray,
                   spacing: Sequence[float]) -> np.ndarray:
    """The 2 × 2 panel image as ``(H, W, 3) uint8`` (internal ``(z, y, x)`` arrays)."""
    ref = truth if truth is not None else pred
    truth = truth if truth is not None else np.zeros_like(pred)
    k = _best_index(ref, 0)
    j = _best_index(ref, 1)
    ax = [_blend(hu[k], truth[k]), _blend(hu[k], pred[k])]
    stretch = spacing[0] / spacing[2]
    co = [_stretch_rows(_blend(hu[:, j], truth[:, j]), stretch), _stretch_rows(_blend(hu[:, j], pred[:, j]), stretch)]
    gap = 4
    width = ax[0].shape[1] * 2 + gap
    rows = []
    for a, b in (ax, co):
        row = np.zeros((max(a.shape[0], b.shape[0]), width, 3), np.uint8)
        row[: a.shape[0], : a.shape[1]] = a
        row[: b.shape[0], a.shape[1] + gap: a.shape[1] + gap + b.shape[1]] = b
        rows.append(row)
    return np.concatenate([rows[0], np.zeros((gap, width, 3), np.uint8), rows[1]], axis=0)


def overlay_png(path, hu, truth, pred, spacing) -> Path:
    """Write :func:`render_overlay` to ``path``."""
    return write_png(path, render_overlay(hu, truth, pred, spacing))
