"""Training of both stages, seeded and exactly resumable (docs/design.md, Training).

Loss: soft Dice of each of the 3 sigmoid HEC channels, summed, on the full-resolution output and,
with weights 1, ½, ¼, on the ½ and ¼ outputs (deep supervision); the coarse targets are the
full-resolution HEC masks average-pooled (k2 s2, over active children) onto the coarse levels' sites
— soft targets. Optimiser: AdamW (lr 5e-4, betas (0.9, 0.95), eps 1e-12, weight decay 1e-5 on conv
and Linear weights only — none on biases, norms, GRN), linear warm-up then cosine to 0, gradient
accumulation (paper: batch 1 × 8). ``loss="dice+bce"`` adds binary cross-entropy (nnU-Net's Dice + CE)
— not the paper's loss, an option for short CPU runs where soft Dice alone lets the rare masses/tumour
channels collapse onto the kidney channel. ``init_weights`` fine-tunes from a weights file. Augmentation (:mod:`kidney.augment`) on the dense volume before
sparsification.

Samples: stage 1 — whole scans resampled to the stage-1 spacing (labels nearest; with ``antialias``
each scan smoothed first, :func:`kidney.io.resample`, and the weights say so); stage 2 — kidney
crops at the stage-2 spacing made by the ROI rule of :mod:`kidney.roi` from the ground-truth kidneys
(every labelled component), plus, with ``stage1_weights``, the crops stage 1 itself finds on each
training scan (as at inference). Stage-2 inputs keep only voxels in the HU window *and* the dilated
ROI — so on a ground-truth crop the active set's border is the true kidney+masses outline dilated by
the ROI ball, a cue the network can learn and will not have at inference. ``gt_crops=False`` trains
on the stage-1 crops only, whose masks are what the network meets at inference. With
``lesion_crops`` that share of the steps pick their crop through a mass drawn uniformly among every
mass of the training crops (:mod:`kidney.sampling`), the rest uniformly among the crops. With ``patch``
each step reads a box of that many voxels a side cut from its crop (before augmentation), a share
``lesion_patches`` of them centred on a mass (:mod:`kidney.sampling`: nnU-Net's foreground
oversampling, one mass drawn uniformly so small lesions are centred as often as large ones).

Reproducibility: micro-step ``i`` draws its case and augmentation from
``numpy.random.default_rng([seed, i])``, so a run resumed from a checkpoint (saved after an optimiser
step, when no gradient is pending) replays exactly the same samples; with the (deterministic) CPU
backends the weights after resuming are bitwise those of an uninterrupted run.

Outputs in ``out_dir``: ``checkpoint.npz`` (model, optimiser, schedule, accumulator, counters; every
``checkpoint_every`` optimiser steps and at the end), ``weights.npz`` (model + meta, what the pipeline
loads), ``train_log.jsonl`` (one JSON line per optimiser step: loss, per-HEC Dice, lr, time),
``train_config.json``.

Data parallel (``comm``, :mod:`kidney.distributed`): the ranks split each optimiser step's micro-steps
and sum their gradients in a fixed order; rank 0 writes the files.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from sparseconv import functional as F
from sparseconv.device import normalize_device, to_device, to_host, use_device_backend
from sparseconv.nn import load_checkpoint, save_checkpoint
from sparseconv.optim import AdamW, GradientAccumulator, WarmupCosine, param_groups

from . import io, roi as roi_mod
from .augment import AUGMENTATIONS, NO_AUGMENT, AugmentConfig, augment, augmentation
from .model import KidneyNet, get_config, hec_targets, save_weights, weights_record
from .sampling import mass_owners, patch_box
from .sparsify import sparsify, stage_preset

__all__ = ["LOSSES", "TrainConfig", "Sample", "iter_samples", "load_samples", "make_batch", "loss_and_dice",
           "Trainer", "train"]

# the paper's soft Dice, and nnU-Net's two additions to it (see loss_and_dice)
LOSSES = ("dice", "dice+bce", "dice+topk10")


@dataclass
class TrainConfig:
    """Everything a run depends on (stored in checkpoints and weights).

    Paper values are the defaults except ``steps`` (set per run) and where the CPU budget forces a
    change, which the shipped-weights script states explicitly on the command line.
    """

    stage: int = 1
    model: str = "compact"
    spacing: Optional[float] = None          # default: the stage preset's (paper's) grid, kidney.sparsify
    stage1_spacing: Optional[float] = None   # stage 2 only: grid the ROI rule runs on (default: stage 1's)
    steps: int = 1000                        # optimiser steps
    accumulate: int = 8
    lr: float = 5e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-12
    weight_decay: float = 1e-5
    warmup_steps: Optional[int] = None       # default: steps / 500 (1 of 500 epochs), at least 1
    decay_steps: Optional[int] = None        # default: 4/5 of the steps (last 400 of 500 epochs)
    ds_weights: Tuple[float, ...] = (1.0, 0.5, 0.25)
    seed: int = 0
    augment: bool = True
    augmentation: str = "paper"            # paper, nnunet, scanner or none (kidney.augment.AUGMENTATIONS)
    checkpoint_every: int = 50
    keep_weights_at: Tuple[int, ...] = ()   # also write weights_step<N>.npz at these steps (kept, not overwritten)
    max_cases: Optional[int] = None
    folds: int = 1                           # cross-validation: case i (sorted) is in fold i % folds
    fold: Optional[int] = None               # train on every fold but this one
    stage1_weights: Optional[str] = None     # stage 2: also train on the crops this stage-1 model finds
    gt_crops: bool = True                    # stage 2: train on ground-truth crops (False: stage-1 crops only)
    loss: str = "dice"                       # paper: soft Dice; LOSSES lists the others (documented deviations)
    init_weights: Optional[str] = None       # start from these weights instead of the random init
    widen: bool = False                      # init_weights are a narrower config: widen them (kidney.widen)
    deepen: bool = False                     # init_weights have fewer levels: add levels (kidney.deepen)
    kidney_free_crops: float = 0.0           # stage 1: share of field-of-view crops cut with no kidney
    edge_cuts: float = 0.0                   # stage 2: share of crops cut through the kidney (volume edge)
    fat_strands: float = 0.0                 # share of crops with thin soft tissue painted into their fat
    antialias: bool = False                  # stage 1: smooth each scan before shrinking it (kidney.io.resample)
    patch: Optional[int] = None              # stage 2: train on boxes of this many voxels a side (kidney.sampling)
    lesion_patches: float = 0.0              # stage 2 with patch: share of boxes centred on a mass
    lesion_crops: float = 0.0                # stage 2: share of steps whose crop is picked through a mass

    def resolved(self) -> "TrainConfig":
        c = replace(self)
        if c.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {c.stage}")
        c.spacing = float(c.spacing or stage_preset(c.stage).spacing_mm)
        c.stage1_spacing = float(c.stage1_spacing or stage_preset(1).spacing_mm)
        if c.warmup_steps is None:
            c.warmup_steps = max(1, c.steps // 500)
        if c.decay_steps is None:
            c.decay_steps = max(1, (4 * c.steps) // 5)
        c.betas = tuple(float(b) for b in c.betas)
        c.ds_weights = tuple(float(w) for w in c.ds_weights)
        c.keep_weights_at = tuple(sorted({int(n) for n in c.keep_weights_at}))
        if any(n < 1 for n in c.keep_weights_at):
            raise ValueError(f"keep_weights_at must hold step numbers >= 1, got {c.keep_weights_at}")
        if c.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {c.augmentation!r}")
        if c.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {c.loss!r}")
        if not c.gt_crops and not (c.stage == 2 and c.stage1_weights):
            raise ValueError("gt_crops=False (stage-1 crops only) needs stage 2 and stage1_weights")
        if c.fold is not None and not 0 <= c.fold < c.folds:
            raise ValueError(f"fold must be in [0, {c.folds}), got {c.fold}")
        for share in ("kidney_free_crops", "edge_cuts", "fat_strands", "lesion_patches", "lesion_crops"):
            if not 0.0 <= getattr(c, share) <= 1.0:
                raise ValueError(f"{share} must lie in [0, 1], got {getattr(c, share)}")
        if c.kidney_free_crops and (c.stage != 1 or not c.augment
                                    or AUGMENTATIONS[c.augmentation].p_fov_crop == 0):
            raise ValueError("kidney_free_crops needs stage 1 and an augmentation with field-of-view "
                             "crops (augmentation='nnunet')")
        if c.antialias and c.stage != 1:
            raise ValueError("antialias is for stage 1 (the whole scan shrunk to its grid); stage 2 reads crops")
        if c.edge_cuts and c.stage != 2:
            raise ValueError("edge_cuts is for stage 2 (stage 1 gets field-of-view crops: augmentation='nnunet')")
        if c.patch is not None and c.stage != 2:
            raise ValueError("patch is for stage 2 (boxes cut from its crops); stage 1 reads whole scans")
        if c.patch is not None and int(c.patch) < 1:
            raise ValueError(f"patch must be >= 1 voxel a side, got {c.patch}")
        if c.lesion_crops and c.stage != 2:
            raise ValueError("lesion_crops is for stage 2 (its crops hold the lesions); stage 1 reads whole scans")
        if c.lesion_patches and c.patch is None:
            raise ValueError("lesion_patches needs patch (the size of the boxes it centres on a mass)")
        if c.widen and not c.init_weights:
            raise ValueError("widen needs init_weights (the narrower network to start from)")
        if c.deepen and not c.init_weights:
            raise ValueError("deepen needs init_weights (the shallower network to start from)")
        if c.widen and c.deepen:
            raise ValueError("widen and deepen are separate steps: widen first, then deepen the result")
        if c.steps < 1 or c.accumulate < 1:
            raise ValueError(f"steps and accumulate must be >= 1, got {c.steps}, {c.accumulate}")
        return c

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"], d["ds_weights"] = list(self.betas), list(self.ds_weights)
        d["keep_weights_at"] = list(self.keep_weights_at)
        return d


@dataclass
class Sample:
    """One training input on its stage grid: HU, KiTS labels, optional ROI mask."""

    case_id: str
    hu: np.ndarray
    labels: np.ndarray
    mask: Optional[np.ndarray] = None


def _case_dirs(data_dir) -> List[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no such data folder: {data_dir}")
    cases = sorted(d for d in data_dir.iterdir() if (d / io.IMAGE_NAME).is_file() and (d / io.LABEL_NAME).is_file())
    if not cases:
        raise FileNotFoundError(f"{data_dir} holds no case_*/imaging.nii.gz + segmentation.nii.gz")
    return cases


def split_cases(data_dir, cfg: "TrainConfig") -> Tuple[List[Path], List[Path]]:
    """``(training, held_out)`` case folders: sorted, first ``max_cases``, fold ``i % folds``."""
    cases = _case_dirs(data_dir)[: cfg.max_cases]
    if cfg.fold is None:
        return cases, []
    return ([c for i, c in enumerate(cases) if i % cfg.folds != cfg.fold],
            [c for i, c in enumerate(cases) if i % cfg.folds == cfg.fold])


def stage2_crops(image: np.ndarray, labels: np.ndarray, spacing, cfg: TrainConfig,
                 prob1: Optional[np.ndarray] = None) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stage-2 training crops of one scan: from its ground-truth kidneys (or a stage-1 map ``prob1``)."""
    extent = [n * s for n, s in zip(image.shape, spacing)]
    if prob1 is None:
        g1 = io.resampled_shape(labels.shape, spacing, (cfg.stage1_spacing,) * 3)
        prob1 = io.resample(labels, spacing, cfg.stage1_spacing, order=0, out_shape=g1) > 0
    out = []
    for r in roi_mod.find_rois(prob1, cfg.stage1_spacing, extent, cfg.spacing):
        hu, mask, lab = roi_mod.crop_roi(image, spacing, r, labels=labels)
        out.append((hu, mask, lab))
    return out


def iter_samples(data_dir, cfg: TrainConfig, progress: bool = False) -> Iterator[Sample]:
    """Read the cases of ``data_dir`` (KiTS layout) one at a time and yield the stage's samples."""
    cfg = cfg.resolved()
    cases, _ = split_cases(data_dir, cfg)
    stage1 = None
    if cfg.stage == 2 and cfg.stage1_weights:
        from .pipeline import Segmenter
        stage1 = Segmenter.stage1_only(cfg.stage1_weights)
    n = 0
    for case_dir in cases:
        case = io.load_case(case_dir, label=True)
        img, lab, sp = case.image.array, case.label.array, case.image.spacing
        if cfg.stage == 1:
            hu = io.resample(img, sp, cfg.spacing, order=1, antialias=cfg.antialias)
            labels = io.resample(lab, sp, cfg.spacing, order=0, out_shape=hu.shape)
            samples = [Sample(case.case_id, hu, labels)]
        else:
            crops = stage2_crops(img, lab, sp, cfg) if cfg.gt_crops else []
            if stage1 is not None:
                prob1, _ = stage1.stage1_probabilities(img, sp)
                crops += stage2_crops(img, lab, sp, cfg, prob1=prob1)
            samples = [Sample(f"{case.case_id}/roi{k}", hu, labels, mask)
                       for k, (hu, mask, labels) in enumerate(crops)]
        n += len(samples)
        if progress:
            print(f"loaded {case.case_id} ({n} samples)", file=sys.stderr, flush=True)
        yield from samples
    if not n:
        raise ValueError(f"{data_dir}: no training samples (stage {cfg.stage}: no labelled kidney found?)")


def load_samples(data_dir, cfg: TrainConfig, progress: bool = False) -> List[Sample]:
    """Every sample of ``data_dir`` (KiTS layout), held in memory (:func:`iter_samples`)."""
    return list(iter_samples(data_dir, cfg, progress))


def make_batch(hu, labels, mask, stage: int):
    """``(x, targets)``: the sparse input (HU window, standardised) and its ``(N, 3)`` HEC targets;
    ``(None, None)`` when no voxel is active."""
    sp = sparsify(hu, stage_preset(stage), mask=mask)
    if sp.empty:
        return None, None
    x = sp.tensor
    zyx = x.coords[:, 1:]
    t = hec_targets(labels[zyx[:, 0], zyx[:, 1], zyx[:, 2]])
    return x, t


def loss_and_dice(model: KidneyNet, x, targets, ds_weights: Sequence[float], loss: str = "dice"):
    """Deep-supervised soft Dice loss (a one-element Tensor) and the hard Dice per HEC at full resolution.

    ``loss="dice+bce"`` adds, at every supervised level, binary cross-entropy summed over the 3
    channels (mean over voxels) — nnU-Net's Dice + CE; ``"dice+topk10"`` adds the same BCE averaged
    over the 10 % of voxels where it is largest — nnU-Net's Dice + TopK10. Neither is the paper's loss.
    """
    kind = loss
    outs = model(x)
    target = x.replace_feats(targets)  # same sites (and kernel-map cache) as the network's input
    loss = None
    for level, out in enumerate(outs):
        if level:
            target = F.avg_pool(target, 2, 2)  # soft targets on the level's sites (the down conv's)
        w = ds_weights[level] if level < len(ds_weights) else 0.0
        if w == 0:
            continue
        term = F.soft_dice_loss(out, target.feats)
        if kind == "dice+bce":
            term = term + F.bce_with_logits(out, target.feats) * float(out.num_channels)
        elif kind == "dice+topk10":
            term = term + F.topk_bce_with_logits(out, target.feats, k=0.1)
        term = term * w
        loss = term if loss is None else loss + term
    dice = F.dice_score(to_host(outs[0].feats) > 0, to_host(targets) > 0.5)
    return loss, dice


class Trainer:
    """Holds model, optimiser, schedule, data; :meth:`run` trains to ``cfg.steps`` optimiser steps."""

    def __init__(self, cfg: TrainConfig, samples: List[Sample], out_dir, augment_config: AugmentConfig = None,
                 data_description: str = "", progress: bool = True, comm=None, device: str = "cpu"):
        self.cfg = cfg.resolved()
        # "cuda": the model, its optimiser state and each step's batch live on the GPU (sparseconv's
        # CuPy backend); samples are drawn and augmented on the host, as on the CPU.
        self.device = normalize_device(device)
        if self.device == "cuda" and comm is not None:
            raise ValueError("training on several processes runs on the CPU only (device 'cpu')")
        use_device_backend(self.device)
        self.comm = comm  # a kidney.distributed.Communicator: data-parallel over its ranks (None: one process)
        self.is_root = comm is None or comm.rank == 0
        self.samples = samples
        # every mass's crop, for the steps that pick a crop through a mass (kidney.sampling)
        self.mass_owners = mass_owners([s.labels for s in samples]) if self.cfg.lesion_crops else None
        if self.cfg.lesion_crops and not len(self.mass_owners):
            raise ValueError("lesion_crops: no training crop holds a mass (KiTS label 2 or 3)")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.aug = augment_config or (augmentation(self.cfg.augmentation, self.cfg.stage)
                                      if self.cfg.augment else NO_AUGMENT)
        if self.cfg.kidney_free_crops:
            self.aug = replace(self.aug, p_fov_kidney_free=self.cfg.kidney_free_crops)
        if self.cfg.edge_cuts:  # applies even with augmentation off (augment.py, step E)
            self.aug = replace(self.aug, p_edge_cut=self.cfg.edge_cuts)
        if self.cfg.fat_strands:  # applies even with augmentation off (augment.py, step F)
            self.aug = replace(self.aug, p_fat_strands=self.cfg.fat_strands)
        self.data_description = data_description
        self.progress = progress
        c = self.cfg
        self.input_weights = {k: weights_record(getattr(c, k)) for k in ("init_weights", "stage1_weights")
                              if getattr(c, k)}
        self.model = KidneyNet(get_config(c.model), seed=c.seed)
        if c.init_weights:
            from .model import load_weights
            if c.widen:
                from .widen import widen
                self.model = widen(load_weights(c.init_weights)[0], get_config(c.model), seed=c.seed)
            elif c.deepen:
                from .deepen import deepen
                self.model = deepen(load_weights(c.init_weights)[0], get_config(c.model), seed=c.seed)
            else:
                load_weights(c.init_weights, self.model)
        self.model.to(self.device)  # before the optimiser, whose state follows the parameters
        self.model.train()
        self.opt = AdamW(param_groups(self.model, c.weight_decay), lr=c.lr, betas=c.betas, eps=c.eps)
        self.sched = WarmupCosine(self.opt, c.warmup_steps, c.steps, c.decay_steps)
        self.acc = GradientAccumulator(self.opt, every=c.accumulate)
        self.micro_step = 0
        self.opt_step = 0
        self.elapsed = 0.0
        self.history = []

    # --- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.npz"

    def save_checkpoint(self, path=None):
        extra = {"micro_step": self.micro_step, "opt_step": self.opt_step, "elapsed": self.elapsed,
                 "config": json.dumps(self.cfg.to_dict())}
        if self.comm is not None:
            extra["ranks"] = self.comm.size
        save_checkpoint(path or self.checkpoint_path, model=self.model, optimizer=self.opt,
                        scheduler=self.sched, accumulator=self.acc, extra=extra)

    def load_checkpoint(self, path=None):
        path = Path(path or self.checkpoint_path)
        tree = load_checkpoint(path, model=self.model, optimizer=self.opt, scheduler=self.sched,
                               accumulator=self.acc)
        extra = tree["extra"]
        saved = json.loads(str(np.asarray(extra["config"])))
        mine = self.cfg.to_dict()
        # The schedule's length may change on resume (lengthen or shorten a run: the learning rate
        # follows the new schedule from the saved step on); everything else must match.
        schedule = ("steps", "warmup_steps", "decay_steps", "checkpoint_every", "keep_weights_at")
        defaults = TrainConfig().to_dict()  # fields newer than the checkpoint: their defaults
        differ = {k: (saved.get(k, defaults[k]), v) for k, v in mine.items()
                  if k not in schedule and saved.get(k, defaults[k]) != v}
        if differ:
            raise ValueError(f"checkpoint {path} was made with a different config: {differ}")
        self.micro_step = int(extra["micro_step"])
        self.opt_step = int(extra["opt_step"])
        self.elapsed = float(extra["elapsed"])
        self.resumed_ranks = int(extra["ranks"]) if "ranks" in extra else 1
        return self

    def export_weights(self, path=None, extra_meta: Optional[dict] = None) -> Path:
        c = self.cfg
        train = c.to_dict()
        train.update(self.input_weights)  # a file name and digest, not a path on the training machine
        meta = {"stage": c.stage, "spacing_mm": c.spacing, "stage1_spacing_mm": c.stage1_spacing,
                "window": list(stage_preset(c.stage).window),
                "train": train, "optimizer_steps": self.opt_step, "micro_steps": self.micro_step,
                "train_seconds": round(self.elapsed, 1), "data": self.data_description,
                "n_samples": len(self.samples), "device": self.device}
        if c.antialias:  # the pipeline reads the scan as training did (kidney.pipeline.ANTIALIAS_KEY)
            meta["antialias"] = True
        if self.comm is not None:
            meta["ranks"] = self.comm.size
        if self.history:
            last = self.history[-min(len(self.history), 20):]
            meta["final_train_loss_mean20"] = float(np.mean([h["loss"] for h in last]))
            meta["final_train_dice_mean20"] = [float(v) for v in np.mean([h["dice"] for h in last], axis=0)]
        meta.update(extra_meta or {})
        return save_weights(self.model, path or self.out_dir / "weights.npz", meta)

    # --- one micro-step --------------------------------------------------------------------------
    def draw(self, micro_step: int):
        """The (augmented) sample of a micro-step: a function of ``(seed, micro_step)`` only."""
        rng = np.random.default_rng([self.cfg.seed, micro_step])
        for _ in range(20):
            if self.cfg.lesion_crops and rng.random() < self.cfg.lesion_crops:  # drawn only when asked
                s = self.samples[int(self.mass_owners[rng.integers(len(self.mass_owners))])]
            else:
                s = self.samples[int(rng.integers(len(self.samples)))]
            hu, labels, mask = s.hu, s.labels, s.mask
            if self.cfg.patch is not None:  # drawn only when asked: runs without patches keep their draws
                box = patch_box(labels, self.cfg.patch, rng, self.cfg.lesion_patches)
                hu, labels, mask = hu[box], labels[box], None if mask is None else mask[box]
            hu, labels, mask = augment(hu, labels, rng, self.aug, mask=mask)
            x, t = make_batch(hu, labels, mask, self.cfg.stage)
            if x is not None:
                return s, x, t
        raise ValueError("20 draws in a row gave no active voxel; check the data and the HU window")

    def run(self, steps: Optional[int] = None, log_every: int = 1):
        """Train until ``steps`` optimiser steps (default ``cfg.steps``) have been taken in total."""
        target = self.cfg.steps if steps is None else min(int(steps), self.cfg.steps)
        log_path = self.out_dir / "train_log.jsonl"
        if self.is_root:  # with several ranks, rank 0 writes every file
            if log_path.exists():  # after a resume: drop records of steps the checkpoint does not hold
                keep = [l for l in log_path.read_text().splitlines()
                        if l.strip() and json.loads(l)["step"] <= self.opt_step]
                log_path.write_text("".join(l + "\n" for l in keep))
            (self.out_dir / "train_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        bar = _progress(target, self.opt_step, f"stage {self.cfg.stage}", self.progress and self.is_root)
        losses, dices = [], []
        while self.opt_step < target:
            t0 = time.perf_counter()
            if self.comm is not None:  # this rank's share of the step's samples, gradients summed over ranks
                from .distributed import train_step
                losses, dices, n_active, extra = train_step(self)
                stepped = True
            else:
                sample, x, t = self.draw(self.micro_step)
                if self.device != "cpu":
                    x, t = x.to(self.device), to_device(t, self.device)
                loss, dice = loss_and_dice(self.model, x, t, self.cfg.ds_weights, self.cfg.loss)
                self.acc.backward(loss)
                self.micro_step += 1
                losses.append(float(loss.item()))
                dices.append(dice)
                n_active, extra = int(len(x)), {}
                stepped = self.acc.step()
            self.elapsed += time.perf_counter() - t0
            if not stepped:
                continue
            self.sched.step()
            self.opt_step += 1
            if not self.is_root:
                continue
            rec = {"step": self.opt_step, "micro_step": self.micro_step, "loss": float(np.mean(losses)),
                   "dice": [float(v) for v in np.mean(dices, axis=0)], "lr": self.opt.param_groups[0]["lr"],
                   "n_active": n_active, "seconds": round(self.elapsed, 2), **extra}
            losses, dices = [], []
            self.history.append(rec)
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.update(rec)
            if self.opt_step % self.cfg.checkpoint_every == 0 or self.opt_step == target:
                self.save_checkpoint()
                self.export_weights()
            if self.opt_step in self.cfg.keep_weights_at:  # a snapshot to compare later (never overwritten
                self.export_weights(self.out_dir / f"weights_step{self.opt_step}.npz")  # by this run)
        bar.close()
        return self


class _progress:
    """tqdm when installed (and wanted), else one line every ~30 s on stderr."""

    def __init__(self, total, initial, desc, enabled):
        self.enabled, self.total, self.t_last = enabled, total, 0.0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
            except ImportError:
                pass
        self.desc = desc

    def update(self, rec):
        if not self.enabled:
            return
        d = rec["dice"]
        post = f"loss {rec['loss']:.3f} dice {d[0]:.2f}/{d[1]:.2f}/{d[2]:.2f} lr {rec['lr']:.1e}"
        if self.bar is not None:
            self.bar.set_postfix_str(post, refresh=False)
            self.bar.update(1)
        elif time.time() - self.t_last > 30 or rec["step"] == self.total:
            self.t_last = time.time()
            print(f"{self.desc}: step {rec['step']}/{self.total} {post}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(data_dir, out_dir, cfg: TrainConfig, resume: bool = True, progress: bool = True,
          augment_config: Optional[AugmentConfig] = None, stop_at: Optional[int] = None, comm=None,
          device: str = "cpu", sample_cache=None) -> Trainer:
    """Load the data, build the trainer, resume from ``out_dir/checkpoint.npz`` if present, train.

    ``comm`` (a :class:`kidney.distributed.Communicator`): train data-parallel over its ranks.
    ``device="cuda"``: one process trains on the GPU (CuPy backend). ``sample_cache`` (a folder):
    the samples memory-mapped from there, written there first if it does not exist
    (:mod:`kidney.sample_cache`; the same bits, a fraction of the memory)."""
    cfg = cfg.resolved()
    root = comm is None or comm.rank == 0
    if sample_cache is not None:
        from .sample_cache import cached_samples
        samples = cached_samples(data_dir, cfg, sample_cache, progress=progress and root)
    else:
        samples = load_samples(data_dir, cfg, progress=progress and root)
    cases, held_out = split_cases(data_dir, cfg)
    # the folder by its name only, as weights_record names files: a path of the training machine
    # would say nothing on another, and may say more than its owner meant to share
    desc = f"{len(cases)} cases from {Path(data_dir).resolve().name}" + (
        f" (fold {cfg.fold} of {cfg.folds} held out)" if cfg.fold is not None else "")
    if held_out and root:  # a folder of links to the held-out cases: kidney segment -i OUT/validation ...
        val = Path(out_dir) / "validation"
        val.mkdir(parents=True, exist_ok=True)
        for c in held_out:
            link = val / c.name
            if not link.exists():
                link.symlink_to(c.resolve(), target_is_directory=True)
    trainer = Trainer(cfg, samples, out_dir, augment_config, desc, progress, comm=comm, device=device)
    if comm is not None:  # every rank resumes from the same checkpoint, or none; all states checked equal
        from .distributed import start
        start(trainer, resume, progress)
    elif resume and trainer.checkpoint_path.exists():
        trainer.load_checkpoint()
        if progress:
            print(f"resumed from {trainer.checkpoint_path} at step {trainer.opt_step}", file=sys.stderr)
    return trainer.run(steps=stop_at)
