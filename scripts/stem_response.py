"""What the network's first layer passes on: the stem's output as a function of HU.

    python scripts/stem_response.py [--weights DIR]

The stem is a 1×1×1 convolution without bias from one input channel, then a LayerNorm over its
channels. With one input ``x`` (the standardised HU) every channel is ``x·w_c``, so the LayerNorm
sees one vector ``x·w`` scaled by ``x``: its output is ``(w - mean w)/std w · x / sqrt(x² + a²)``
with ``a = sqrt(eps) / std(w)``, times the LayerNorm's affine map. Every channel is an affine
function of one saturating feature ``x / sqrt(x² + a²)`` — a soft sign around the
standardisation's mean. This prints, per stage of a weight set, the singular values of the stem's
centred output over the stage's HU window (one non-zero value: rank one), ``a`` in HU, and the
feature at a few HU values: intensities far from the centre on the same side look alike.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kidney.model import load_weights
from kidney.pipeline import default_weights
from kidney.sparsify import stage_preset
from sparseconv import SparseTensor


def stem_curve(model, preset, hu):
    """``(N, C)`` stem outputs for the HU values ``hu``, one isolated voxel each."""
    x = ((np.asarray(hu, np.float64) - preset.mean) / preset.std).astype(np.float32).reshape(-1, 1)
    coords = np.zeros((len(x), 4), np.int32)
    coords[:, 3] = 2 * np.arange(len(x))  # apart: the 1x1x1 stem sees each voxel alone anyway
    return np.asarray(model.stem(SparseTensor(coords, x, (1, 1, 2 * len(x)))).feats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="weight set or folder (default: the shipped default)")
    args = p.parse_args(argv)
    for stage, found in zip((1, 2), default_weights(args.weights)):
        for path in (found,) if isinstance(found, Path) else found:  # each member of an ensemble
            report_stem(stage, path)
    return 0


def report_stem(stage: int, path: Path) -> None:
    """Print the stem's response over the stage's HU window for the weights in ``path``."""
    model, _ = load_weights(path)
    model.eval()
    preset = stage_preset(stage)
    lo, hi = preset.window
    out = stem_curve(model, preset, np.linspace(lo, hi, 101))
    sv = np.linalg.svd(out - out.mean(axis=0), compute_uv=False)
    print(f"stage {stage} ({path.name}): window [{lo}, {hi}] HU, centre {preset.mean} HU")
    print("  singular values of the centred output: " + " ".join(f"{v:.3g}" for v in sv))
    if model.config.stem_bias:
        print("  the stem has a bias: the curve's centre and width are learnt (no closed form for a)")
    else:
        w = model.stem[0].weight.data.ravel()
        a_hu = np.sqrt(model.stem[1].eps) / w.std() * preset.std  # the stem LayerNorm's eps
        print(f"  a = {a_hu:.1f} HU: the feature is linear within about ±a of the centre, then saturates")
    probe = np.array([lo, 0.0, 30.0, preset.mean, 100.0, 150.0, 250.0, hi])
    probe = probe[(probe >= lo) & (probe <= hi)]
    feature = stem_curve(model, preset, probe)
    ref = feature[np.argmax(probe)] - feature[np.argmin(probe)]
    coord = (feature - feature[np.argmin(probe)]) @ ref / (ref @ ref)  # 0 at the window's low end, 1 at its top
    print("  HU:      " + " ".join(f"{h:7.1f}" for h in probe))
    print("  feature: " + " ".join(f"{c:7.3f}" for c in coord)
          + "   (position along the low-to-high HU direction)")


if __name__ == "__main__":
    raise SystemExit(main())
