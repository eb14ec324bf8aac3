"""The ``kidney`` command.

    kidney phantom --out DIR [-n N] [--seed S] [--preset demo|full|tiny] [--phase P]
                   [--from-labels DATA_DIR] [--overwrite]
    kidney evaluate PRED_DIR DATA_DIR [--out CSV] [--workers N] [--overwrite] [--voxel-grid]
    kidney demo [--out DIR] [--seed S] [--preset demo|tiny|full] [--weights DIR]
    kidney segment IN [-o OUT] [--weights DIR]      (IN/OUT: a NIfTI file, or folders with -i/-o)
                   [--continue] [--num-parts K --part-id I] [--workers N | --scheduler ADDR]
    kidney train --data DIR --stage {1,2} [--out DIR] [--model CONFIG] [--steps N] ...
                 [--distributed [--collective-timeout S]]   (under mpiexec -n P / srun: data-parallel)
    kidney --version                                (also: python -m kidney ...)

demo, segment and train also take --device cpu|cuda (cuda: sparseconv's CuPy backend; training on
one GPU, --distributed runs on the CPU) and --threads N (Numba's CPU threads).

Each subcommand is a pair of functions, ``add_<name>(subparsers)`` (declares its arguments and sets
``func``) and ``run_<name>(args) -> int`` (exit status); :data:`SUBCOMMANDS` lists the ``add_``
functions. Exit status: 0 success, 1 finished but some case failed (evaluate, segment), 2 usage
or input error (the message names the file or value), 130 interrupted (segment: --continue
finishes). Python warnings print as one line ``warning: ...``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


# --- phantom ------------------------------------------------------------------------------------

def add_phantom(sub) -> None:
    p = sub.add_parser("phantom", help="write synthetic CT phantoms in the KiTS23 folder layout",
                       description="Write OUT/case_XXXXX/{imaging,segmentation}.nii.gz: seeded "
                                   "synthetic abdominal CTs (HU, int16) with kidney, tumour and "
                                   "cyst labels, or CTs synthesised around real label maps.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("-n", type=int, default=None,
                   help="number of cases (default 1; with --from-labels: all cases)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--preset", default="demo", choices=("demo", "full", "tiny"),
                   help="grid: demo 256x256 ~1.6 mm (default), full 512x512 KiTS-like, tiny 96x96")
    p.add_argument("--phase", default="random",
                   choices=("random", "cycle", "noncontrast", "corticomedullary", "nephrographic"),
                   help="contrast phase (random: drawn per case; cycle: case i gets phase i %% 3 "
                        "of non-contrast, corticomedullary, nephrographic)")
    p.add_argument("--appearance", default="classic",  # kidney.phantom.APPEARANCES (not imported here: startup)
                   choices=("classic", "varied", "varied-organs", "varied-texture", "varied-fascia",
                            "varied-fat"),
                   help="classic: the fixed HU table (default, reproduces earlier phantoms); varied: "
                        "drawn phase, contrast dose, kidney and per-lesion HU, noise and blur; "
                        "varied-organs: varied, and the liver and the spleen beside the kidneys drawn too; "
                        "varied-texture: varied-organs, and the soft organs uneven at a coarse scale; "
                        "varied-fascia: varied-texture, and septa, renal fascia and small vessels in the fat; "
                        "varied-fat: varied-fascia, and the fat uneven at a coarse scale too")
    p.add_argument("--lesion-depth", default="classic", choices=("classic", "real"),  # phantom.anatomy.LESION_DEPTHS
                   help="how deep in the kidney the drawn lesions lie: classic (default, reproduces earlier "
                        "phantoms: cysts mostly bulging out, none inside) or real (as deep as the lesions "
                        "of the real training label maps); not with --from-labels")
    p.add_argument("--from-labels", type=Path, default=None, metavar="DATA_DIR",
                   help="synthesise CT around DATA_DIR/case_*/segmentation.nii.gz instead")
    p.add_argument("--split", default=None, choices=("train", "validation", "test"),
                   help="with --from-labels: only the cases of this part of the fixed KiTS23 split "
                        "(kidney/data/kits23_split.json); each must be in DATA_DIR")
    p.add_argument("--grid", default="native", type=_grid_arg, metavar="native|coarse|SZ,SY,SX",
                   help="with --from-labels: the label map's own grid (default), a drawn coarser "
                        "grid (coarse: in-plane 1.1-1.6 mm, slices 2-5 mm, never finer than the "
                        "source), or one given spacing in mm for every case (e.g. 3,3,3)")
    p.add_argument("--copies", type=int, default=1,
                   help="with --from-labels: CTs per label map, other seeds (case_XXXXX_cK; default 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="with --from-labels: processes writing cases side by side (default 1)")
    p.add_argument("--paste-lesions", type=float, default=0.0, metavar="P",
                   help="with --from-labels: share P of the CTs get one or two lesions of the other "
                        "label maps given pasted into their kidneys (scaled 0.8-1.2, mirrored, "
                        "centred on a kidney voxel drawn at random; seeded) before the CT is painted, "
                        "so the labels written carry them (default 0: the maps as they are)")
    p.add_argument("--start", type=int, default=0, help="first case number (synthetic only)")
    p.add_argument("--tissue", action="store_true",
                   help="also write case_*/tissue.nii.gz: the tissue each voxel was painted with (uint8 "
                        "ids into kidney.phantom.TISSUES; ids past it are tissues drawn per lesion); the "
                        "CT and labels are the same bits with or without it")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=run_phantom)


def _grid_arg(text: str):
    """``--grid``: ``'native'``, ``'coarse'`` or a spacing ``'SZ,SY,SX'`` (mm, each in (0, 100))."""
    if text in ("native", "coarse"):
        return text
    try:
        spacing = tuple(float(v) for v in text.split(","))
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or not all(0 < v < 100 for v in spacing):
        raise argparse.ArgumentTypeError(f"--grid must be native, coarse or three spacings in mm "
                                         f"'SZ,SY,SX' (each in (0, 100)), got {text!r}")
    return spacing


def run_phantom(args) -> int:
    from . import phantom

    if args.from_labels is not None:
        if args.lesion_depth != "classic":
            raise ValueError("--lesion-depth applies to drawn phantoms only: --from-labels keeps the map's lesions")
        return _phantom_from_labels(args)
    if args.split is not None or args.grid != "native" or args.copies != 1 or args.workers != 1 \
            or args.paste_lesions:
        raise ValueError("--split, --grid, --copies, --workers and --paste-lesions apply to "
                         "--from-labels only")
    n = 1 if args.n is None else args.n
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    t0 = time.perf_counter()

    def report(i, path):
        print(f"wrote {path}", flush=True)

    phantom.write_dataset(args.out, n, args.seed, overwrite=args.overwrite, start=args.start,
                          progress=report, preset=args.preset, phase=args.phase,
                          appearance=args.appearance, lesion_depth=args.lesion_depth, tissue=args.tissue)
    print(f"{n} phantom case(s) in {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _phantom_from_labels(args) -> int:
    from . import io
    from .phantom import TISSUE_NAME
    from .phantom.appearance import case_phase

    src = Path(args.from_labels)
    if not src.is_dir():
        raise FileNotFoundError(f"no such data folder: {src}")
    if args.split is not None:
        from .splits import load_split

        cases = [src / c for c in load_split()[args.split]]
        missing = [c for c in cases if not (c / io.LABEL_NAME).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0] / io.LABEL_NAME} is missing ({len(missing)} of the "
                                    f"{len(cases)} {args.split} cases are not in {src})")
    else:
        cases = sorted(d for d in src.iterdir() if (d / io.LABEL_NAME).is_file())
    if not cases:
        raise FileNotFoundError(f"{src} holds no case_*/segmentation.nii.gz")
    if args.copies < 1 or args.workers < 1:
        raise ValueError(f"--copies and --workers must be >= 1, got {args.copies}, {args.workers}")
    if not 0.0 <= args.paste_lesions <= 1.0:
        raise ValueError(f"--paste-lesions is a share of the CTs, in [0, 1], got {args.paste_lesions}")
    jobs = [(case, k) for case in cases[:args.n] for k in range(args.copies)]
    outs = [Path(args.out) / (case.name if args.copies == 1 else f"{case.name}_c{k}") for case, k in jobs]
    names = (io.IMAGE_NAME, io.LABEL_NAME) + ((TISSUE_NAME,) if args.tissue else ())
    for out in outs:  # refuse before writing anything
        for name in names:
            if (out / name).exists() and not args.overwrite:
                raise FileExistsError(f"{out / name} exists; pass --overwrite to replace it")
    work = [(case, out, args.seed + i, case_phase(args.phase, i), args.grid, args.appearance,
             args.overwrite, args.paste_lesions, args.tissue)
            for i, ((case, _), out) in enumerate(zip(jobs, outs))]
    donors = _donor_lesions(cases) if args.paste_lesions > 0 else []
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, initializer=_set_donors, initargs=(donors,)) as pool:
            _report(pool.map(_one_from_labels, work), args.out)
    else:
        _set_donors(donors)
        _report(map(_one_from_labels, work), args.out)
    return 0


_DONORS: list = []  # the lesions --paste-lesions draws from, set once per process


def _set_donors(donors) -> None:
    global _DONORS
    _DONORS = list(donors)


def _donor_lesions(cases):
    """Every lesion of 0.5 ml or more of the label maps ``cases`` (``--paste-lesions``)."""
    from . import io
    from .phantom.lesion_paste import lesions_of

    donors = []
    for case in cases:
        seg = io.load_case(case, image=False, label=True).label
        donors += lesions_of(seg.array, seg.spacing, case.name)
    if not donors:
        raise ValueError("--paste-lesions: the label maps given hold no lesion of 0.5 ml or more")
    print(f"--paste-lesions: {len(donors)} lesions of {len(cases)} label maps", flush=True)
    return donors


def _maybe_paste(labels, spacing, seed: int, share: float, source: str):
    """``labels`` with one or two lesions of the other maps pasted, for a share ``share`` of the
    seeds; returns ``(labels, note)``, the note naming what was pasted (empty: nothing)."""
    if share <= 0:
        return labels, ""
    import numpy as np

    from .phantom.lesion_paste import paste_lesions

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261205]))
    if rng.random() >= share:
        return labels, ""
    others = [d for d in _DONORS if d.source != source]
    labels, pasted = paste_lesions(labels, spacing, others, rng, n=1 + int(rng.random() < 0.5))
    return labels, "".join(f" pasted {d.source} {d.kind} {d.ml:.1f} ml" for d in pasted)


def _report(done, out_dir) -> None:
    """Print each written case and record it in the manifest (one process writes it)."""
    from .phantom import dataset

    for line, row in done:
        dataset.append_manifest(out_dir, [row])
        print(line, flush=True)


def _one_from_labels(job):
    """Write one CT around one label map (a process-pool task of ``kidney phantom --from-labels``);
    returns the line to print and the case's manifest row."""
    from . import io, phantom

    case, out, seed, phase, grid, appearance, overwrite, paste, tissue = job
    seg = io.load_case(case, image=False, label=True).label
    if grid != "native":
        spacing = phantom.training_grid(seed, seg.spacing) if grid == "coarse" else grid
        shape = io.resampled_shape(seg.shape, seg.spacing, spacing)
        labels = io.resample(seg.array, seg.spacing, spacing, order=0, out_shape=shape)
        labels, pasted = _maybe_paste(labels, spacing, seed, paste, case.name)
        ph = phantom.from_labels(labels, spacing, seed, phase=phase, appearance=appearance)
        phantom.write_case(ph, out, overwrite=overwrite, tissue=tissue)
        where = f"{tuple(round(s, 2) for s in spacing)} mm grid"
    else:
        labels, pasted = _maybe_paste(seg.array, seg.spacing, seed, paste, case.name)
        ph = phantom.from_labels(labels, seg.spacing, seed, phase=phase, appearance=appearance)
        phantom.write_case(ph, out, overwrite=overwrite, tissue=tissue, like=seg)
        where = f"the grid of {case / io.LABEL_NAME}"
    row = phantom.dataset.manifest_row(out.name, ph, f"from_labels {case.name} ({grid} grid){pasted}")
    return f"wrote {out} ({ph.phase}, {ph.appearance}, on {where})", row


# --- evaluate -----------------------------------------------------------------------------------

def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="KiTS23 Dice and Surface Dice of a prediction folder",
                       description="Score PRED_DIR/case_XXXXX.nii.gz (or PRED_DIR/case_XXXXX/"
                                   "segmentation.nii.gz) against DATA_DIR/case_XXXXX/"
                                   "segmentation.nii.gz and write evaluation.csv (official "
                                   "columns, one row per reference case, then 'average'). A "
                                   "missing or mis-shaped prediction, a label outside 0..3 or a "
                                   "prediction on another grid (spacing, origin, direction) than "
                                   "its reference scores 0 and is reported (exit status 1).")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV path (default PRED_DIR/evaluation.csv)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.add_argument("--voxel-grid", action="store_true",
                   help="score a prediction whose grid (spacing, origin, direction) differs from its "
                        "reference's on voxel indices anyway, with a warning (shapes must still match)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from . import metrics

    metrics.check_folders(args.pred_dir, args.data_dir)  # both folders before anything is written
    out = args.out or Path(args.pred_dir) / "evaluation.csv"
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    evaluation = metrics.evaluate_folder(args.pred_dir, args.data_dir, workers=args.workers,
                                         voxel_grid=args.voxel_grid)
    metrics.write_csv(evaluation, out, overwrite=True)
    for case in evaluation.cases:
        if case.problem:
            print(f"PROBLEM {case.case_id}: {case.problem} (scored 0)", file=sys.stderr)
        elif case.warning:
            print(f"warning {case.case_id}: {case.warning}", file=sys.stderr)
    for name in evaluation.extra_predictions:
        print(f"warning: prediction {name} has no reference case in {args.data_dir}",
              file=sys.stderr)
    metrics.print_summary(evaluation)
    _summary_by_phase(evaluation, args.data_dir)
    print(f"wrote {out}")
    return 1 if evaluation.problems else 0


def _summary_by_phase(evaluation, data_dir) -> None:
    """Mean Dice / Surface Dice per contrast phase, when ``data_dir/phantoms.csv`` (written by
    ``kidney phantom``) records the phase of every case."""
    from . import metrics
    from .phantom.dataset import read_manifest

    made = read_manifest(data_dir)
    if not made or any(c.case_id not in made for c in evaluation.cases):
        return
    print("by contrast phase (from phantoms.csv): Dice, then Surface Dice, per HEC")
    for phase in dict.fromkeys(made[c.case_id]["phase"] for c in evaluation.cases):
        rows = [c for c in evaluation.cases if made[c.case_id]["phase"] == phase]
        m = metrics.Evaluation(rows, []).mean
        print(f"  {phase:17s} n={len(rows):3d}  Dice " + " / ".join(f"{v:.3f}" for v in m[:3])
              + "   Surface Dice " + " / ".join(f"{v:.3f}" for v in m[3:]))


# --- train --------------------------------------------------------------------------------------

def add_train(sub) -> None:
    p = sub.add_parser("train", help="train stage 1 or stage 2 on a KiTS23-layout folder",
                       description="Train one stage of the two-stage network on DATA/case_*/"
                                   "{imaging,segmentation}.nii.gz. Defaults are the paper's settings "
                                   "(AdamW lr 5e-4, betas 0.9/0.95, eps 1e-12, wd 1e-5, batch 1 x 8 "
                                   "accumulation, warm-up 1/500 of the steps, cosine to 0 over the last "
                                   "4/5, soft Dice + deep supervision 1, 1/2, 1/4, augmentation; stage "
                                   "spacing 1.99 / 0.78 mm). Writes OUT/checkpoint.npz (resumed "
                                   "automatically), OUT/weights.npz, OUT/train_log.jsonl.")
    p.add_argument("--data", type=Path, required=True, help="training folder (KiTS23 layout)")
    p.add_argument("--stage", type=int, required=True, choices=(1, 2))
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/stage<N>)")
    p.add_argument("--model", default="compact",  # the names of kidney.model.CONFIGS (not imported here: startup)
                   help="model config: paper, compact, wide, compact-stem-bias, wide-stem-bias, "
                        "wider-stem-bias, deep-stem-bias, tiny (default compact)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--accumulate", type=int, default=8, help="micro-batches per step (default 8)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default steps/500)")
    p.add_argument("--decay", type=int, default=None, help="cosine steps at the end (default 4/5 of steps)")
    p.add_argument("--spacing", type=float, default=None,
                   help="stage grid in mm (default: paper, 1.99 for stage 1, 0.78 for stage 2)")
    p.add_argument("--stage1-spacing", type=float, default=None,
                   help="stage 2: stage-1 grid the ROI rule runs on (default 1.99 mm)")
    p.add_argument("--stage1-weights", type=Path, default=None,
                   help="stage 2: also train on the crops this stage-1 model finds")
    p.add_argument("--no-gt-crops", action="store_true",
                   help="stage 2 with --stage1-weights: train on the stage-1 crops only (a ground-truth "
                        "crop's mask outlines the true kidney, a cue absent at inference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument("--augment", default="paper", choices=("paper", "nnunet", "scanner", "none"),
                   help="augmentation set: the paper's (default), nnU-Net's on top of it (intensity, "
                        "gamma, noise, blur, low resolution, rotation and scaling, mirroring, and "
                        "field-of-view crops in stage 1), the scanner's alone (blur, noise of a drawn "
                        "texture, low resolution), or none")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimiser steps (default 50)")
    p.add_argument("--keep-weights-at", type=_step_list, default=(), metavar="N,N,...",
                   help="also write OUT/weights_stepN.npz at each of these optimiser steps, to compare "
                        "snapshots of one run later (e.g. 1000,2000,3000)")
    p.add_argument("--max-cases", type=int, default=None, help="use the first N cases only")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5; with --fold)")
    p.add_argument("--fold", type=int, default=None,
                   help="hold out fold K (cases i %% folds == K, sorted); links to them go to OUT/validation")
    p.add_argument("--loss", default="dice", choices=("dice", "dice+bce", "dice+topk10"),  # train.LOSSES
                   help="dice (paper: soft Dice summed over the 3 HECs), dice+bce (adds BCE, as nnU-Net) "
                        "or dice+topk10 (adds BCE over the 10%% of voxels where it is largest: nnU-Net's "
                        "TopK10)")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="start from these weights (fine-tuning) instead of the random initialisation")
    p.add_argument("--widen", action="store_true",
                   help="--init-weights hold a narrower network of the same design (e.g. compact for --model "
                        "wide): start from it widened, computing the same function (Net2WiderNet)")
    p.add_argument("--deepen", action="store_true",
                   help="--init-weights hold a network with fewer levels of the same design (e.g. "
                        "wide-stem-bias for --model deep-stem-bias): start from it with the coarser levels "
                        "added, computing the same function (their way back up starts at zero)")
    p.add_argument("--kidney-free-crops", type=float, default=0.0, metavar="P",
                   help="stage 1 with --augment nnunet: share P of the field-of-view crops cut to a slab "
                        "above or below every kidney, so stage 1 learns to propose nothing there "
                        "(default 0)")
    p.add_argument("--edge-cuts", type=float, default=0.0, metavar="P",
                   help="stage 2: share P of the crops cut through the kidney along the cranio-caudal "
                        "axis, one side dropped, as a scan that ends inside a kidney (default 0; "
                        "applies with any --augment, none included)")
    p.add_argument("--fat-strands", type=float, default=0.0, metavar="P",
                   help="share P of the crops with thin soft-tissue sheets and strands painted into "
                        "their fat, as the fascia and vessels between a real scan's organs (default 0; "
                        "applies with any --augment, none included)")
    p.add_argument("--lesion-crops", type=float, default=0.0, metavar="P",
                   help="stage 2: share P of the steps pick their crop through a mass (tumour or cyst) drawn "
                        "uniformly among every mass of the training crops, so crops with no lesion are "
                        "skipped and a small lesion comes as often as a large one (default 0: crops drawn "
                        "uniformly)")
    p.add_argument("--patch", type=int, default=None, metavar="N",
                   help="stage 2: train on boxes of N voxels a side cut from the crops (nnU-Net trains on "
                        "patches; default: whole crops). Segmenting still reads whole crops")
    p.add_argument("--lesion-patches", type=float, default=0.0, metavar="P",
                   help="stage 2 with --patch: share P of the boxes centred on a mass (tumour or cyst; one "
                        "mass drawn uniformly, then one of its voxels), nnU-Net's foreground "
                        "oversampling (default 0)")
    p.add_argument("--antialias", action="store_true",
                   help="stage 1: smooth each scan (Gaussian, scikit-image's anti-aliasing rule) before it is "
                        "shrunk to the stage-1 grid; stored with the weights, so segmenting reads scans alike")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps of the --steps schedule; "
                        "run again to continue")
    p.add_argument("--sample-cache", type=Path, default=None, metavar="DIR",
                   help="keep the training samples (stage-2 crops, stage-1 volumes) in DIR and memory-map "
                        "them: written on the first run (one case in memory at a time), read at once by "
                        "every later run and resume, shared by runs side by side; the same results bit for "
                        "bit. A cache made for other data or options is refused, not overwritten")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--return-freed-memory", action="store_true",
                   help="leave the C library's allocator as it starts: large freed blocks go back to the "
                        "system, and every step faults in fresh pages. By default the run keeps freed "
                        "memory for its next steps (faster steps, the same results bit for bit; the "
                        "process keeps what its heap grew to, which can be above one step's peak: use "
                        "this where memory is short; sparseconv.allocator)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks this command was started on (mpiexec -n P kidney "
                        "train ... --distributed): each rank takes a share of every step's --accumulate "
                        "samples, gradients are summed in a fixed order, rank 0 writes the files "
                        "(pip install sparseconv[mpi]; docs/scale.md)")
    p.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: end the run when a rank has not answered for this long "
                        "(default 600; before the first step at least 600, while the ranks load their data)")
    p.add_argument("--test-fault", default=None, metavar="RANK:STEP:exit|kill", help=argparse.SUPPRESS)
    _add_compute_args(p)
    p.set_defaults(func=run_train)


def _step_list(text: str) -> tuple:
    """``"1000,2000"`` -> ``(1000, 2000)``: optimiser steps, positive integers."""
    try:
        steps = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step numbers separated by commas, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected step numbers >= 1, got {text!r}")
    return steps


def _communicator(args):
    """``--distributed``: the MPI ranks' communicator (mpi4py imported only then); else ``None``."""
    if not args.distributed:
        if args.collective_timeout is not None or args.test_fault is not None:
            raise ValueError(f"{'--collective-timeout' if args.test_fault is None else '--test-fault'} goes "
                             "with --distributed")
        return None
    from .distributed import DEFAULT_TIMEOUT, communicator

    comm = communicator(args.device, DEFAULT_TIMEOUT if args.collective_timeout is None else args.collective_timeout)
    if args.test_fault:  # for the test suite: RANK:STEP:exit|kill
        rank, step, mode = (args.test_fault.split(":") + ["", "", ""])[:3]
        if not (rank.isdigit() and step.isdigit() and mode in ("exit", "kill")):
            raise ValueError(f"--test-fault takes RANK:STEP:exit|kill, got {args.test_fault!r}")
        comm.fault = (int(rank), int(step), mode)
    if comm.size == 1 and not args.quiet:
        print("warning: --distributed on 1 rank (start it with mpiexec -n P, or srun)", file=sys.stderr)
    return comm


def run_train(args) -> int:
    from .distributed import CollectiveTimeout
    from .train import TrainConfig, train

    cfg = TrainConfig(stage=args.stage, model=args.model, spacing=args.spacing,
                      stage1_spacing=args.stage1_spacing, steps=args.steps, accumulate=args.accumulate,
                      lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
                      decay_steps=args.decay, seed=args.seed, augment=not args.no_augment, augmentation=args.augment,
                      checkpoint_every=args.checkpoint_every, max_cases=args.max_cases,
                      folds=args.folds if args.fold is not None else 1, fold=args.fold,
                      loss=args.loss, init_weights=str(args.init_weights) if args.init_weights else None,
                      stage1_weights=str(args.stage1_weights) if args.stage1_weights else None,
                      gt_crops=not args.no_gt_crops, kidney_free_crops=args.kidney_free_crops,
                      edge_cuts=args.edge_cuts, fat_strands=args.fat_strands, antialias=args.antialias,
                      widen=args.widen, deepen=args.deepen, patch=args.patch,
                      lesion_patches=args.lesion_patches, lesion_crops=args.lesion_crops,
                      keep_weights_at=args.keep_weights_at)
    out = args.out or Path("runs") / f"stage{args.stage}"
    comm = _communicator(args)
    if not args.return_freed_memory:
        from sparseconv.allocator import keep_freed_memory
        keep_freed_memory()  # where the C library has no such setting, nothing changes
    t0 = time.perf_counter()
    try:
        trainer = train(args.data, out, cfg, resume=not args.fresh, progress=not args.quiet, stop_at=args.stop_at,
                        comm=comm, device=args.device, sample_cache=args.sample_cache)
    except Exception as exc:  # several ranks: say which failed, and end them all (no rank left waiting)
        if comm is None or comm.size == 1:
            raise
        usage = isinstance(exc, (FileNotFoundError, FileExistsError, ValueError))
        if not usage and not isinstance(exc, CollectiveTimeout):
            import traceback
            traceback.print_exc()
        print(f"kidney train: error: {'' if str(exc).startswith('rank ') else f'rank {comm.rank}: '}{exc}",
              file=sys.stderr, flush=True)
        comm.abort(2 if usage else 1)
        raise
    if comm is not None and comm.rank != 0:
        return 0
    last = trainer.history[-1] if trainer.history else None
    if last:
        d = last["dice"]
        print(f"stage {args.stage}: {trainer.opt_step} steps, loss {last['loss']:.4f}, train Dice "
              f"{d[0]:.3f}/{d[1]:.3f}/{d[2]:.3f} ({time.perf_counter() - t0:.0f} s)")
    print(f"wrote {Path(out) / 'weights.npz'}")
    return 0


# --- segment ------------------------------------------------------------------------------------

def _add_weights_args(p) -> None:
    p.add_argument("--weights", type=Path, default=None, metavar="DIR",
                   help="folder with stage1*.npz and stage2*.npz (or stage1/weights.npz, "
                        "stage2/weights.npz from kidney train; several files of a stage are an ensemble), "
                        "or a shipped set by name: phantoms (the default) or varied "
                        "(see kidney/weights/README.md)")
    p.add_argument("--stage1-weights", type=Path, nargs="+", default=None, metavar="FILE",
                   help="stage-1 weights file (several: an ensemble, their sigmoids averaged)")
    p.add_argument("--stage2-weights", type=Path, nargs="+", default=None, metavar="FILE",
                   help="stage-2 weights file (several: an ensemble, their sigmoids averaged)")
    p.add_argument("--tta", action="store_true",
                   help="test-time mirroring: average each stage over the 8 flips of its input "
                        "(8x the network time; not in the paper)")
    p.add_argument("--keep-components", type=_keep_components, default=None, metavar="N|stage1",
                   help="keep only the N largest connected parts of the predicted foreground (0: all), or "
                        "with 'stage1' the parts that touch a kidney stage 1 found; default: the setting "
                        "stored with the stage-2 weights (kidney/postprocess.py)")
    p.add_argument("--roi-threshold", type=float, default=None, metavar="T",
                   help="the stage-1 probability a ROI grows from, in (0, 1); default: the ROI rule stored "
                        "with the stage-1 weights, else the paper's 0.1 (kidney/roi.py)")
    p.add_argument("--roi-dilation", type=int, default=None, metavar="D",
                   help="the ball each ROI's component is dilated by, voxels across at 1.99 mm; default: "
                        "the rule stored with the stage-1 weights, else the paper's 11")
    p.add_argument("--blur-tta", type=_sigmas, default=None, metavar="S,S,...",
                   help="test-time blur: average stage 2 over each crop blurred by a Gaussian of each σ "
                        "(voxels of the stage-2 grid; 0: as is), e.g. 0,1 (one pass per σ; not in the "
                        "paper); default: the setting stored with the stage-2 weights, else as is")


def _keep_components(text: str):
    """``--keep-components``: ``stage1`` or a whole number (its range is checked with the setting)."""
    from .postprocess import STAGE1

    if text == STAGE1:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number >= 0 or 'stage1', got {text!r}") from None


def _sigmas(text: str):
    """``--blur-tta``: comma-separated numbers (their range is checked with the setting)."""
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated σ values such as 0,1, got {text!r}") from None


def _segmenter(args):
    from .pipeline import Segmenter, check_blur_tta, default_weights
    from .postprocess import check_keep_components
    from .roi import RoiConfig, roi_overrides

    check_keep_components(args.keep_components, "--keep-components")
    if args.blur_tta is not None:
        check_blur_tta(args.blur_tta, "--blur-tta")
    RoiConfig().stored_with(roi_overrides(args.roi_threshold, args.roi_dilation), "on the command line")
    d1, d2 = default_weights(args.weights)
    return Segmenter(args.stage1_weights or d1, args.stage2_weights or d2, tta=args.tta, device=args.device,
                     keep_components=args.keep_components, roi_threshold=args.roi_threshold,
                     roi_dilation=args.roi_dilation, blur_tta=args.blur_tta)


def add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment kidney, tumour and cyst in CT scans",
                       description="Two-stage segmentation of one NIfTI scan or a folder of them "
                                   "(KiTS23 layout case_*/imaging.nii.gz, or *.nii.gz / *_0000.nii.gz "
                                   "as in nnU-Net). Labels 0 background, 1 kidney, 2 tumour, 3 cyst, "
                                   "written on each input's exact grid (shape and affine). A folder "
                                   "run keeps OUT/manifest.jsonl (one line per finished case: status, "
                                   "time, memory, error), goes on past a bad case (exit status 1 if "
                                   "any failed), resumes with --continue, and can run on Dask "
                                   "(--workers, --scheduler). No output ever replaces an input.",
                       epilog="Exit status: 0 all done, 1 some case failed (see the manifest), 2 usage "
                              "or input error (nothing was segmented), 130 interrupted (--continue "
                              "finishes the run).")
    p.add_argument("input", type=Path, nargs="?", default=None, help="NIfTI file or folder")
    p.add_argument("-i", "--in", dest="input_opt", type=Path, default=None, help="same as INPUT")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="output file (single input; default INPUT_seg.nii.gz) or folder "
                        "(writes <case_id>.nii.gz, what kidney evaluate reads, and manifest.jsonl)")
    _add_weights_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="finish an earlier run into the same folder: skip cases whose output exists, "
                        "whose manifest row says done, and whose input and weights are unchanged")
    p.add_argument("--num-parts", type=int, default=1, metavar="K",
                   help="split the cases (sorted by id) into K shards, e.g. for a job array (default 1)")
    p.add_argument("--part-id", type=int, default=0, metavar="I",
                   help="segment shard I (0..K-1): every K-th case from the I-th")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-case time limit: a case past it fails (with Dask: its worker is killed "
                        "and the case retried, up to --retries)")
    d = p.add_argument_group("Dask (pip install sparseconv[cluster])")
    d.add_argument("--workers", type=int, default=None, metavar="N",
                   help="segment on a Dask LocalCluster of N worker processes, one case at a time each")
    d.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                   help="Numba and BLAS threads each worker gives its case (default --threads, else 1)")
    d.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="per worker, e.g. 4GB (default: the machine's memory shared out); a worker "
                        "past it is restarted and its case retried")
    d.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join a running Dask cluster (tcp://HOST:8786); inputs, outputs and weights "
                        "must be on storage every worker sees under the same paths")
    d.add_argument("--scheduler-file", type=Path, default=None, metavar="JSON",
                   help="join the cluster described by this scheduler file")
    d.add_argument("--retries", type=int, default=2,
                   help="Dask: re-runs of a case after an unexpected error, and after its worker "
                        "died (killed, out of memory, timed out); then it is failed (default 2)")
    d.add_argument("--dashboard-address", default=":8787",
                   help="LocalCluster dashboard (default :8787; 'none' for no dashboard)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_compute_args(p)
    p.set_defaults(func=run_segment)


def run_segment(args) -> int:
    from . import cohort, io
    from .pipeline import find_inputs

    src = args.input_opt or args.input
    if src is None:
        raise ValueError("give an input file or folder (INPUT or -i)")
    segmenter = _segmenter(args)  # a bad weights file fails before any work is done
    inputs = find_inputs(src)
    single_file = Path(src).is_file()
    out = args.out
    dask = args.workers is not None or args.scheduler is not None or args.scheduler_file is not None
    if single_file and (out is None or str(out).endswith((".nii", ".nii.gz"))):
        if dask or args.resume or args.num_parts != 1:
            raise ValueError("--workers, --scheduler, --continue and --num-parts are for folder runs "
                             "(-o FOLDER)")
        if out is None:
            stem = inputs[0][0] if Path(src).name != io.IMAGE_NAME else "segmentation_pred"
            out = Path(src).parent / f"{stem}_seg.nii.gz"
        cohort.check_outputs([cohort.Case(inputs[0][0], str(src), str(out))])
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        vol = io.load_nifti(src)
        res = segmenter.segment(vol, details=True)
        io.save_nifti(res.labels, vol, out, overwrite=args.overwrite)
        if not args.quiet:
            _print_times(res)
        print(f"wrote {out}")
        return 0
    if out is None:
        raise ValueError("a folder input needs -o OUT_FOLDER")
    import sparseconv

    weights = cohort.Weights.from_dir(args.weights, args.stage1_weights, args.stage2_weights, tta=args.tta,
                                      device=args.device, backend=sparseconv.get_backend().name,
                                      keep_components=args.keep_components, roi_threshold=args.roi_threshold,
                                      roi_dilation=args.roi_dilation, blur_tta=args.blur_tta)
    threads = args.threads_per_worker or args.threads or 1
    summary = cohort.segment_cohort(
        src, out, weights, segmenter=segmenter, resume=args.resume, overwrite=args.overwrite,
        num_parts=args.num_parts, part_id=args.part_id, workers=args.workers, threads_per_worker=threads,
        memory_limit=args.memory_limit, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
        retries=args.retries, timeout=args.timeout,
        dashboard_address=None if str(args.dashboard_address).lower() == "none" else args.dashboard_address,
        progress=not args.quiet)
    failed = [r for r in summary.rows if r["status"] == "failed"]
    for r in failed[:10]:
        print(f"FAILED {r['case']}: {r['error']}", file=sys.stderr)
    if len(failed) > 10:
        print(f"... and {len(failed) - 10} more failed case(s)", file=sys.stderr)
    print(summary.line())
    print(f"manifest: {summary.manifest}")
    return summary.exit_code


def _print_times(res) -> None:
    for stage in ("stage1", "roi", "stage2", "merge"):
        if stage in res.seconds:
            n = res.n_active.get(stage)
            extra = f", {n:,} active voxels" if n is not None else ""
            print(f"  {stage:7s} {res.seconds[stage]:6.2f} s   peak RSS {res.peak_mb[stage]:7.1f} MB{extra}")


# --- demo ---------------------------------------------------------------------------------------

def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="one-command demo: phantom -> NIfTI -> two-stage segmentation -> scores",
                       description="Make a synthetic CT case (unseen phantom seed), write it as "
                                   "NIfTI, segment it from the files with the shipped weights, print "
                                   "per-HEC Dice and Surface Dice and the time and peak memory of "
                                   "each stage, and write the prediction and a PNG overlay.")
    p.add_argument("--out", type=Path, default=Path("kidney_demo"), help="folder (default ./kidney_demo)")
    p.add_argument("--seed", type=int, default=42, help="phantom seed (default 42; training used 1000)")
    p.add_argument("--preset", default="demo", choices=("demo", "tiny", "full"),
                   help="phantom grid (default demo: 256x256, ~1.6 mm)")
    _add_weights_args(p)
    p.add_argument("--no-png", action="store_true", help="skip the overlay PNG")
    _add_compute_args(p)
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    import warnings

    import numpy as np

    from . import io, metrics, phantom

    out = Path(args.out)
    t0 = time.perf_counter()
    case_dir = phantom.write_dataset(out / "data", 1, args.seed, overwrite=True, preset=args.preset)[0]
    t_phantom = time.perf_counter() - t0
    print(f"phantom  {case_dir} ({t_phantom:.1f} s)")
    t0 = time.perf_counter()
    case = io.load_case(case_dir, label=True)
    print(f"load     {case.image.shape} voxels at {tuple(round(s, 2) for s in case.image.spacing)} mm "
          f"({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    segmenter = _segmenter(args)
    print(f"weights  stage 1 {segmenter.stage1.describe()} @ {segmenter.stage1.spacing} mm, "
          f"stage 2 {segmenter.stage2.describe()} @ {segmenter.stage2.spacing} mm "
          f"({time.perf_counter() - t0:.1f} s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = segmenter.segment(case.image, details=True)
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"segment  {len(res.rois)} ROI(s); per stage:")
    _print_times(res)
    print(f"  total   {sum(res.seconds.values()):6.2f} s")
    pred_path = io.save_nifti(res.labels, case.image, out / "pred" / f"{case.case_id}.nii.gz", overwrite=True)
    print(f"wrote    {pred_path}")
    pred = io.load_nifti(pred_path, label=True)  # score what was written, against the truth file
    io.check_same_grid(pred, case.label)
    scores = metrics.score_case(pred.to_file(pred.array), case.label.to_file(case.label.array),
                                io.spacing_of(case.label.affine))
    targets = metrics.PHANTOM_DICE_TARGETS
    print("HEC        Dice    Surface Dice   (target Dice)")
    for hec, (d, sd) in scores.items():
        print(f"  {hec:8s} {d:.4f}  {sd:.4f}         ({targets[hec]:.2f} {'met' if d >= targets[hec] else 'NOT met'})")
    print(f"  mean     {np.mean([v[0] for v in scores.values()]):.4f}  "
          f"{np.mean([v[1] for v in scores.values()]):.4f}")
    if not args.no_png:
        from .overlay import overlay_png
        png = overlay_png(out / "overlay.png", case.image.array, case.label.array, res.labels, case.image.spacing)
        print(f"wrote    {png} (axial and coronal; left truth, right prediction)")
    print(f"all output in {out.resolve()}")
    return 0


# --- device, threads, first-run notice (demo, segment, train) ------------------------------------

def _add_compute_args(p) -> None:
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu: sparseconv's Numba backend (default); cuda: its CuPy backend on the "
                        "current GPU (pip install sparseconv[gpu])")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of the Numba kernels (default: all that Numba sees)")


def _setup_compute(args) -> None:
    """``--threads``, then ``--device``: select the backend, and say so when the CPU kernels are about
    to be compiled (a cold Numba cache). Bad values raise ``ValueError`` (exit status 2)."""
    import numpy as np

    import sparseconv
    from sparseconv.backends import numba_cache

    if args.threads is not None:
        numba_cache.configure()  # before numba is imported
        import numba

        most = numba.config.NUMBA_NUM_THREADS
        if not 1 <= args.threads <= most:
            raise ValueError(f"--threads must be between 1 and {most} (the threads Numba can use here, "
                             f"NUMBA_NUM_THREADS), got {args.threads}")
        numba.set_num_threads(args.threads)
    if args.device == "cuda":
        if args.command == "train" and getattr(args, "distributed", False):
            raise ValueError("--distributed --device cuda: training on several processes runs on the CPU "
                             "only; train on one GPU without --distributed, or use --device cpu")
        try:
            sparseconv.set_backend("cupy")
        except ImportError as err:
            reason = str(err.__cause__ or err).split("; for the GPU backend")[0]
            raise ValueError("--device cuda needs CuPy and a CUDA GPU: pip install sparseconv[gpu] "
                             f"({reason})") from None
        return
    try:
        backend = sparseconv.get_backend()
    except ImportError:  # $SPARSECONV_BACKEND names a backend this machine lacks
        backend = None
    if backend is None or backend.xp is not np:  # a GPU backend, and the user asked for the CPU
        backend = sparseconv.set_backend("numba")
    if backend.name == "numba" and numba_cache.is_cold():
        print("compiling CPU kernels (first run only, about 30 s)...", file=sys.stderr, flush=True)


# --- entry point --------------------------------------------------------------------------------

def _version() -> str:
    """The installed distribution's version, else the version the source says."""
    try:
        from importlib.metadata import version
        return version("sparseconv")
    except Exception:  # noqa: BLE001 - not installed (run from a source tree)
        import kidney
        import sparseconv
        return getattr(kidney, "__version__", sparseconv.__version__)


class _OneLineWarnings:
    """While the command runs, a Python warning prints as ``warning: <message>`` on stderr (no
    source line, no category)."""

    def __enter__(self):
        import warnings

        self.saved = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            print(f"warning: {message}", file=file or sys.stderr, flush=True)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        import warnings

        warnings.showwarning = self.saved


SUBCOMMANDS = [add_demo, add_segment, add_train, add_phantom, add_evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kidney", description="Two-stage sparse KiTS23 "
                                     "kidney/tumour segmentation: data, phantoms and scoring.")
    parser.add_argument("--version", action="version", version=f"kidney {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``kidney`` command; returns the exit status (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _OneLineWarnings():
        try:
            if hasattr(args, "device"):
                _setup_compute(args)
            return int(args.func(args) or 0)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            print(f"kidney {args.command}: error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
