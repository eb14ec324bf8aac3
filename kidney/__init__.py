"""kidney: the two-stage KiTS23 kidney/tumour CT segmenter built on :mod:`sparseconv`.

Submodules (import what you need; this package imports nothing heavy on its own):

- :mod:`kidney.io` — NIfTI in/out on the scan's own grid, internal ``(z, y, x)`` = ``I, P, L``
  orientation, resampling.
- :mod:`kidney.phantom` — synthetic abdominal CT phantoms and CT around real KiTS23 label maps.
- :mod:`kidney.sparsify` — HU window -> :class:`sparseconv.SparseTensor`, stage presets.
- :mod:`kidney.metrics` — KiTS23 Dice and Surface Dice per HEC, folder evaluation.
- :mod:`kidney.model` — the sparse ConvNeXt-V2 U-Net (``paper``: 27,473,696 parameters; ``compact``).
- :mod:`kidney.roi` — stage-1 output -> kidney regions -> stage-2 crops.
- :mod:`kidney.pipeline` — ``segment(image) -> labels`` on the input's grid (:class:`Segmenter`).
- :mod:`kidney.postprocess` — keep the largest connected parts of a label map's foreground.
- :mod:`kidney.components` — connected parts of a mask (26-connectivity), one definition for the
  metrics, the ROI rule, the post-processing, training's sampling and the phantoms.
- :mod:`kidney.peak_memory` — peak resident memory of a block of code (the per-step figures of
  ``segment`` and of the benchmarks).
- :mod:`kidney.train`, :mod:`kidney.augment` — training of both stages, augmentation.
- :mod:`kidney.sample_cache` — training samples written once, memory-mapped by every run.
- :mod:`kidney.overlay` — PNG of axial/coronal slices with truth and prediction.
- :mod:`kidney.cli` — the ``kidney`` command (demo, segment, train, phantom, evaluate).

Labels: 0 background, 1 kidney, 2 tumour, 3 cyst.
"""

LABELS = {0: "background", 1: "kidney", 2: "tumor", 3: "cyst"}
__all__ = ["LABELS"]
