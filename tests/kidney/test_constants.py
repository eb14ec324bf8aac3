"""Each constant has one source: the stage grids and windows (kidney.sparsify's presets), the ROI
rule's sizes (kidney.roi.RoiConfig) and the scoring classes (kidney.metrics.HEC_LABELS); training,
the pipeline, the ROI rule, the model and the network benchmark read them from there."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kidney import metrics, model, pipeline, roi, sparsify, train
from kidney.model import KidneyNet
from kidney.sparsify import STAGE1, STAGE2

ROOT = Path(__file__).resolve().parents[2]


def test_stage_presets_are_the_stage_constants():
    assert sparsify.stage_preset(1) is STAGE1 and sparsify.stage_preset(2) is STAGE2
    assert sparsify.STAGE_PRESETS == {1: STAGE1, 2: STAGE2}
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        sparsify.stage_preset(3)
    cfg = roi.RoiConfig()
    assert (cfg.ref_stage1_mm, cfg.ref_stage2_mm) == (STAGE1.spacing_mm, STAGE2.spacing_mm)
    assert inspect.signature(roi.component_masks).parameters["spacing1"].default == STAGE1.spacing_mm


def test_training_and_pipeline_read_the_grids_from_the_presets(monkeypatch):
    # with other presets in place, the defaults follow them: no second copy of the numbers
    monkeypatch.setitem(sparsify.STAGE_PRESETS, 1, replace(STAGE1, spacing_mm=2.5))
    monkeypatch.setitem(sparsify.STAGE_PRESETS, 2, replace(STAGE2, spacing_mm=1.25, window=(-1.0, 1.0)))
    c = train.TrainConfig(stage=2).resolved()
    assert (c.spacing, c.stage1_spacing) == (1.25, 2.5)
    assert train.TrainConfig(stage=1).resolved().spacing == 2.5
    seg = pipeline.Segmenter(KidneyNet("tiny", seed=0), KidneyNet("tiny", seed=1))
    assert (seg.stage1.spacing, seg.stage2.spacing) == (2.5, 1.25)
    # training sparsifies with the stage's preset: only HU in the patched stage-2 window is active
    hu = np.array([[[-2.0, 0.0, 0.5, 3.0]]], np.float32)
    x, t = train.make_batch(hu, np.zeros(hu.shape, np.uint8), None, 2)
    assert x.coords[:, 3].tolist() == [1, 2] and t.shape == (2, 3)


def test_weights_record_the_preset_grid_and_window(tmp_path):
    hu = np.full((4, 4, 4), 40.0, np.float32)
    labels = np.ones(hu.shape, np.uint8)
    tr = train.Trainer(train.TrainConfig(stage=2, model="tiny", steps=1, accumulate=1),
                       [train.Sample("a", hu, labels)], tmp_path, progress=False)
    _, meta = model.load_weights(tr.export_weights())
    assert (meta["spacing_mm"], meta["stage1_spacing_mm"]) == (STAGE2.spacing_mm, STAGE1.spacing_mm)
    assert meta["window"] == list(STAGE2.window)


def test_scoring_classes_have_one_definition(monkeypatch):
    assert model.HEC_NAMES == tuple(metrics.HEC_LABELS)
    assert set(metrics.HEC_TOLERANCE_MM) == set(metrics.PHANTOM_DICE_TARGETS) == set(metrics.HEC_LABELS)
    labels = np.array([0, 1, 2, 3], np.uint8)
    t = model.hec_targets(labels)
    for c, hec in enumerate(model.HEC_NAMES):
        assert np.array_equal(t[:, c], metrics.hec_mask(labels, hec))
    # the model's training targets follow the metrics' definition, not a copy of it
    monkeypatch.setitem(metrics.HEC_LABELS, model.HEC_NAMES[2], (3,))
    assert model.hec_targets(labels)[:, 2].tolist() == [0, 0, 0, 1]


def _code_constants(path: Path):
    """Every number and tuple of numbers written in the code of a file (not in strings or comments)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            yield node.value
        elif isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts):
            yield tuple(e.value for e in node.elts)


def _sources():
    files = sorted((ROOT / "kidney").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    return {f.relative_to(ROOT).as_posix(): set(_code_constants(f)) for f in files}


def test_grids_and_margins_are_written_once():
    grids = {STAGE1.spacing_mm, STAGE2.spacing_mm}
    margin = roi.RoiConfig().margin
    sources = _sources()
    # kidney/phantom/body.py: 0.78 is a level of the body outline's implicit function, not a grid
    assert sorted(f for f, c in sources.items() if c & grids) == ["kidney/phantom/body.py",
                                                                  "kidney/sparsify.py"]
    assert sorted(f for f, c in sources.items() if margin in c) == ["kidney/roi.py"]


def test_network_benchmark_uses_the_presets_and_the_roi_rule(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # sys.path is restored afterwards
    had_measure = "measure" in sys.modules
    spec = importlib.util.spec_from_file_location("bench_network_constants", ROOT / "benchmarks" / "bench_network.py")
    bench = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(bench)
    finally:
        if not had_measure:
            sys.modules.pop("measure", None)
    assert (bench.STAGE1_MM, bench.STAGE2_MM) == (STAGE1.spacing_mm, STAGE2.spacing_mm)
    assert tuple(bench.MARGIN) == roi.RoiConfig().margin_at(STAGE2.spacing_mm) == (10, 35, 35)
    assert bench.DILATION_MM == (roi.RoiConfig().dilation_diameter - 1) / 2 * STAGE1.spacing_mm


def test_identifiers_spell_tumour():
    """Python names say "tumour"; "tumor" stays only in strings (KiTS23's own names: label and HEC
    names, CSV columns)."""
    bad = []
    for path in sorted((ROOT / "kidney").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [getattr(node, a, None) for a in ("id", "arg", "attr", "name", "asname")]
            bad += [f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')} {n}" for n in names
                    if isinstance(n, str) and "tumor" in n.lower()]
    assert bad == []


def test_train_help_states_the_preset_grids(capsys):
    """The command-line help (kept free of imports so it starts at once) quotes the grids in prose:
    it must quote the presets' values."""
    from kidney import cli
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    s1, s2 = f"{STAGE1.spacing_mm:g}", f"{STAGE2.spacing_mm:g}"
    assert f"stage spacing {s1} / {s2} mm" in text
    assert f"default: paper, {s1} for stage 1, {s2} for stage 2" in text
    assert f"stage-1 grid the ROI rule runs on (default {s1} mm)" in text


def test_connected_parts_have_one_definition():
    """A lesion, a kidney component or a predicted part is the same set of voxels wherever it is
    counted: every count of connected parts goes through kidney.components (26-connectivity)."""
    from kidney.components import label_parts
    from kidney.phantom.lesion_paste import lesions_of
    from kidney.sampling import mass_owners
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 2  # two tumour voxels touching by a corner only: one lesion
    labels[4:6, 4:6, 4:6] = 3  # a cyst apart
    parts, n = label_parts(labels >= 2)
    assert n == 2 and parts[1, 1, 1] == parts[2, 2, 2] != parts[4, 4, 4]
    assert len(mass_owners([labels])) == 2
    assert len(metrics.lesion_recall(labels, labels, (1.0, 1.0, 1.0))) == 2
    assert len(lesions_of(labels, (10.0, 10.0, 10.0), "toy", min_ml=0.0)) == 2
    # and no module counts parts its own way; the body outline of the calibration's CT is the one
    # 6-connected count (SciPy's default), a mask of the whole body rather than of an organ
    calls = []
    for path in sorted((ROOT / "kidney").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "label" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("ndimage", "ndi"):
                calls.append(path.relative_to(ROOT).as_posix())
    assert sorted(calls) == ["kidney/components.py", "kidney/phantom/calibration.py"]
