"""The network of both stages: a sparse U-Net of ConvNeXt-V2 blocks (arXiv 2511.04334;
docs/design.md, Network).

Structure (``L = len(dims)`` levels; every layer works on the active voxels only)::

    stem      SubMConv3d(1 -> d0, k=1, no bias) + LayerNorm
    encoder   level i: depths[i] x Block(d_i); between levels LayerNorm + SparseConv3d(k2 s2, bias)
    decoder   level i (i = L-2 .. 0): LayerNorm + SparseInverseConv3d(k2 s2, bias) back to the encoder
              sites of level i, **summed** with the encoder skip, then decoder_depth x Block(d_i)
    heads     on every decoder level i: LayerNorm + Block(d_i) + Linear(d_i -> 3, no bias)
    Block     x + Linear(4d -> d)(GRN(GELU(Linear(d -> 4d)(LN(DepthwiseSubMConv3d(x, k=3))))))

LayerNorm eps 1e-6, exact GELU, GRN over all active voxels of a sample (γ, β init 0), truncated-normal
init (std 0.02, biases 0). The ``paper`` config — dims (16, 32, 64, 128, 256, 512), depths
(2, 4, 4, 8, 8, 8), 2 blocks per decoder level, heads on all 5 decoder levels — has exactly
27,473,696 parameters. Only the ``n_supervised`` finest heads (1, ½, ¼ resolution: the paper uses 3)
are evaluated in ``forward``; the coarser heads exist (and are counted) as in the paper but are never
run, so they cost no time.

Outputs are logits of the three nested KiTS23 HECs, in the order of :data:`kidney.metrics.HEC_LABELS`
(their one definition): ``0 = kidney+masses {1,2,3}``, ``1 = masses {2,3}``, ``2 = tumour {2}``
(see :func:`hec_targets`).

Dense twin (for the benchmarks): every module here is a small named layer with PyTorch-style parameter
names (``encoders.2.1.pwconv1.weight``), and :meth:`KidneyNet.forward` is written level by level over
four primitives — ``block``, ``down``, ``up``, ``head`` — so a dense twin only has to implement those
four on a dense grid and load the same ``state_dict``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from sparseconv import SparseTensor
from sparseconv import functional as F
from sparseconv import init as I
from sparseconv.nn import ConvNeXtV2Block, LayerNorm, Linear, Module, ModuleList, Sequential
from sparseconv.nn import SparseConv3d, SparseInverseConv3d, SubMConv3d

from .metrics import HEC_LABELS, hec_mask

__all__ = ["ModelConfig", "CONFIGS", "get_config", "KidneyNet", "build_model", "hec_targets",
           "labels_from_hecs", "HEC_NAMES", "PAPER_PARAMETERS", "WeightsError", "save_weights",
           "load_weights", "read_weights", "write_metadata", "weights_record"]

#: The HEC of each output channel (the keys of :data:`kidney.metrics.HEC_LABELS`, in order).
HEC_NAMES = tuple(HEC_LABELS)
PAPER_PARAMETERS = 27_473_696


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`KidneyNet`.

    Attributes:
        name: label stored with weights.
        dims: channels per level (finest first).
        depths: encoder blocks per level.
        decoder_depth: blocks per decoder level (paper: 2).
        in_channels: input features (1: standardised HU).
        out_channels: logits per voxel (3 HECs).
        kernel_size: depthwise kernel of the blocks (paper: 3).
        n_supervised: how many of the finest heads forward evaluates (paper: 3, i.e. 1, ½, ¼).
        head_block: a ConvNeXt block in each head (paper: yes).
        stem_bias: a bias in the stem's 1×1×1 convolution (paper: no). Without it the stem's
            LayerNorm passes on one saturating feature of the HU centred on the standardisation's
            mean (``scripts/stem_response.py``); a bias lets training move its centre and width.
    """

    name: str
    dims: Tuple[int, ...]
    depths: Tuple[int, ...]
    decoder_depth: int = 2
    in_channels: int = 1
    out_channels: int = 3
    kernel_size: int = 3
    n_supervised: int = 3
    head_block: bool = True
    stem_bias: bool = False

    def __post_init__(self):
        if len(self.dims) != len(self.depths) or len(self.dims) < 2:
            raise ValueError(f"model config {self.name!r}: need >= 2 levels and len(dims) == len(depths), "
                             f"got dims={self.dims}, depths={self.depths}")
        if not 1 <= self.n_supervised <= len(self.dims) - 1:
            raise ValueError(f"model config {self.name!r}: n_supervised={self.n_supervised} must be in "
                             f"[1, {len(self.dims) - 1}] (one head per decoder level)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dims"], d["depths"] = list(self.dims), list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["dims"], d["depths"] = tuple(int(v) for v in d["dims"]), tuple(int(v) for v in d["depths"])
        return cls(**d)


CONFIGS: Dict[str, ModelConfig] = {
    # The paper's network (docs/design.md, Network): 27,473,696 parameters.
    "paper": ModelConfig("paper", (16, 32, 64, 128, 256, 512), (2, 4, 4, 8, 8, 8)),
    # CPU budget (2 cores): the same design with 4 levels of narrower, shallower stages and 1 block
    # per decoder level; heads (LN + block + 1x1x1 conv) on its 3 decoder levels = 1, ½, ¼.
    "compact": ModelConfig("compact", (8, 16, 32, 64), (1, 1, 2, 2), decoder_depth=1),
    # The compact design at twice the width (4x the parameters of the pointwise layers): more capacity
    # for the lesion channels; ``kidney train --widen`` starts it from compact weights (kidney.widen).
    "wide": ModelConfig("wide", (16, 32, 64, 128), (1, 1, 2, 2), decoder_depth=1),
    # compact with a bias in the stem (kidney train --widen starts it from compact weights, bias 0)
    "compact-stem-bias": ModelConfig("compact-stem-bias", (8, 16, 32, 64), (1, 1, 2, 2), decoder_depth=1,
                                     stem_bias=True),
    # wide with a bias in the stem (kidney train --widen starts it from wide or compact weights, bias 0)
    "wide-stem-bias": ModelConfig("wide-stem-bias", (16, 32, 64, 128), (1, 1, 2, 2), decoder_depth=1,
                                  stem_bias=True),
    # wide-stem-bias at twice the width again (4x its pointwise parameters): the lesion channels underfit
    # the real-geometry training scans; ``kidney train --widen`` starts it from wide-stem-bias weights.
    "wider-stem-bias": ModelConfig("wider-stem-bias", (32, 64, 128, 256), (1, 1, 2, 2), decoder_depth=1,
                                   stem_bias=True),
    # wide-stem-bias with two coarser levels (1/16 and 1/32 of the grid, as many levels as the paper's):
    # four times the context per coarse voxel; ``kidney train --deepen`` starts it from wide-stem-bias
    # weights, computing the same function (kidney.deepen). The new levels stay at 128 channels.
    "deep-stem-bias": ModelConfig("deep-stem-bias", (16, 32, 64, 128, 128, 128), (1, 1, 2, 2, 2, 2),
                                  decoder_depth=1, stem_bias=True),
    # Unit tests only.
    "tiny": ModelConfig("tiny", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2),
}


def get_config(config) -> ModelConfig:
    """A :class:`ModelConfig` from itself, a dict, or a name in :data:`CONFIGS`."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, dict):
        return ModelConfig.from_dict(config)
    try:
        return CONFIGS[str(config)]
    except KeyError:
        raise ValueError(f"unknown model config {config!r}; use one of {sorted(CONFIGS)}") from None


class Head(Module):
    """LayerNorm + ConvNeXt-V2 block + 1×1×1 conv (Linear d -> out, no bias)."""

    def __init__(self, dim, out_channels, kernel_size=3, block=True):
        self.norm = LayerNorm(dim)
        self.block = ConvNeXtV2Block(dim, kernel_size, init="trunc_normal") if block else None
        self.out = Linear(dim, out_channels, bias=False, init="trunc_normal")

    def forward(self, x):
        x = self.norm(x)
        if self.block is not None:
            x = self.block(x)
        return self.out(x)


class KidneyNet(Module):
    """Sparse ConvNeXt-V2 U-Net; ``forward(x) -> [logits at 1, ½, ¼, ...]`` (``n_supervised`` tensors).

    Args:
        config: a :class:`ModelConfig` or a name in :data:`CONFIGS` (``paper``, ``compact``, ``wide``, ...).
        seed: seeds the truncated-normal initialisation (same seed, same weights).
    """

    def __init__(self, config="compact", seed: Optional[int] = 0):
        self.config = get_config(config)
        cfg = self.config
        if seed is not None:
            I.manual_seed(seed)
        dims, k = cfg.dims, cfg.kernel_size
        tn = dict(init="trunc_normal")
        self.stem = Sequential(SubMConv3d(cfg.in_channels, dims[0], 1, bias=cfg.stem_bias, **tn), LayerNorm(dims[0]))
        self.encoders = ModuleList(Sequential(*[ConvNeXtV2Block(d, k, **tn) for _ in range(n)])
                                   for d, n in zip(dims, cfg.depths))
        self.downs = ModuleList(Sequential(LayerNorm(a), SparseConv3d(a, b, 2, 2, **tn))
                                for a, b in zip(dims[:-1], dims[1:]))
        self.ups = ModuleList(Sequential(LayerNorm(b), SparseInverseConv3d(b, a, 2, **tn))
                              for a, b in zip(dims[:-1], dims[1:]))
        self.decoders = ModuleList(Sequential(*[ConvNeXtV2Block(d, k, **tn) for _ in range(cfg.decoder_depth)])
                                   for d in dims[:-1])
        self.heads = ModuleList(Head(d, cfg.out_channels, k, cfg.head_block) for d in dims[:-1])

    @property
    def levels(self) -> int:
        return len(self.config.dims)

    def forward(self, x: SparseTensor, n_outputs: Optional[int] = None) -> List[SparseTensor]:
        """Logits on ``x``'s sites (index 0) and on the ½, ¼, ... levels' sites.

        ``n_outputs`` (default ``config.n_supervised``) heads are run; ``n_outputs=1`` (inference)
        skips the coarser heads.
        """
        n_out = self.config.n_supervised if n_outputs is None else int(n_outputs)
        if not isinstance(x, SparseTensor):
            raise TypeError(f"KidneyNet needs a SparseTensor, got {type(x).__name__}")
        if x.num_channels != self.config.in_channels:
            raise ValueError(f"KidneyNet({self.config.name}) expects {self.config.in_channels} input channel(s), "
                             f"got {x.num_channels}")
        x = self.stem(x)
        skips = []
        for level in range(self.levels):
            x = self.encoders[level](x)
            if level < self.levels - 1:
                skips.append(x)
                x = self.downs[level](x)
        outputs = {}
        for level in reversed(range(self.levels - 1)):
            x = F.add(self.ups[level](x), skips[level])
            x = self.decoders[level](x)
            if level < n_out:
                outputs[level] = self.heads[level](x)
        return [outputs[i] for i in range(n_out)]

    def extra_repr(self):
        return f"config={self.config.name}, parameters={self.num_parameters():,}"


def build_model(config="compact", seed: Optional[int] = 0) -> KidneyNet:
    return KidneyNet(config, seed)


# --- HEC targets and labels ---------------------------------------------------------------------

def hec_targets(labels: np.ndarray) -> np.ndarray:
    """``(..., 3) float32`` nested HEC masks of KiTS23 labels (0..3), one channel per
    :data:`HEC_NAMES`: kidney+masses, masses, tumour."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape + (len(HEC_NAMES),), np.float32)
    for channel, hec in enumerate(HEC_NAMES):
        out[..., channel] = hec_mask(labels, hec)
    return out


def labels_from_hecs(kidney, masses, tumour) -> np.ndarray:
    """Label map from three boolean HEC maps (docs/design.md, Labels and HECs): 1 where kidney+masses,
    then 3 where masses, then 2 where tumour — each overwrites the previous, so the nesting is imposed."""
    kidney = np.asarray(kidney, bool)
    out = np.zeros(kidney.shape, np.uint8)
    out[kidney] = 1
    out[kidney & np.asarray(masses, bool)] = 3
    out[kidney & np.asarray(tumour, bool)] = 2
    return out


# --- weights files ------------------------------------------------------------------------------

class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the model it is loaded into."""


META_KEY = "__meta__"


def save_weights(model: KidneyNet, path, meta: Optional[dict] = None) -> Path:
    """Write the state dict plus a JSON ``__meta__`` entry (config, and ``meta``: stage, spacing...)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"config": model.config.to_dict(), **(meta or {})}
    arrays = dict(model.state_dict())
    arrays[META_KEY] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    tmp = str(path) + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def weights_record(path) -> str:
    """``"name.npz (sha256 1a2b…)"``: a weight file, named in a form that holds on any machine (what
    a run started from, what was averaged)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return f"{Path(path).name} (sha256 {digest})"


def read_weights(path) -> Tuple[dict, dict]:
    """``(state, meta)`` of a weights file; :class:`WeightsError` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
    except Exception as exc:  # zip/npy errors of every kind
        raise WeightsError(f"weights file {path} is not a readable .npz ({type(exc).__name__}: {exc})") from None
    meta = {}
    if META_KEY in state:
        try:
            meta = json.loads(state.pop(META_KEY).tobytes().decode())
        except Exception as exc:
            raise WeightsError(f"weights file {path}: its {META_KEY} entry is not valid JSON ({exc})") from None
    return state, meta


def write_metadata(path, entries: dict, stage: Optional[int] = None) -> dict:
    """Store ``entries`` in the metadata of the weights file ``path`` (a setting chosen for those
    weights), rewriting the file with the same arrays, which is checked. With ``stage``, a file of
    another stage is refused. Returns the metadata written."""
    before, _ = read_weights(path)
    model, meta = load_weights(path)
    if stage is not None and int(meta.get("stage", stage)) != stage:
        raise ValueError(f"{path} holds stage-{meta['stage']} weights; {', '.join(entries)} go with stage {stage}")
    meta.update(entries)
    save_weights(model, path, meta)
    after, _ = read_weights(path)
    if before.keys() != after.keys() or any(not np.array_equal(before[k], after[k]) for k in before):
        raise RuntimeError(f"{path}: the arrays changed while writing the metadata")
    return meta


def load_weights(path, model: Optional[KidneyNet] = None) -> Tuple[KidneyNet, dict]:
    """Load a weights file into ``model`` (default: a new model of the file's own config).

    Returns ``(model, meta)``. A missing, corrupt or mismatched file raises :class:`WeightsError`
    naming the file and what is wrong (missing / unexpected / mis-shaped entries); nothing is loaded.
    """
    state, meta = read_weights(path)
    if model is None:
        if "config" not in meta:
            raise WeightsError(f"weights file {path} records no model config; pass a model to load it into")
        try:
            model = KidneyNet(ModelConfig.from_dict(meta["config"]), seed=None)
        except (TypeError, KeyError, ValueError) as exc:
            raise WeightsError(f"weights file {path} records an invalid model config: {exc}") from None
    bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise WeightsError(f"weights file {path} holds non-finite values in {bad[:5]}")
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise WeightsError(f"weights file {path} does not fit KidneyNet({model.config.name}): {exc}") from None
    return model, meta
