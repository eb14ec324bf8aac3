"""Data-parallel training over MPI: ``mpiexec -n P kidney train ... --distributed``.

**Samples.** Optimiser step ``s`` is made of the micro-steps ``s·A … s·A + A − 1`` (``A`` =
``accumulate``), and micro-step ``i`` draws its case and augmentation from
``numpy.random.default_rng([seed, i])`` — exactly the samples one process draws. Rank ``r`` of ``P``
takes a contiguous block of them (:func:`share`: block sizes differ by at most one, the first
``A mod P`` ranks take one more; ``A`` must be at least ``P``). Each rank back-propagates
``loss / A`` of its samples, accumulating into its gradients as one process does.

**Reduction (fixed order).** The ranks' gradients are then summed by :meth:`Communicator.allreduce_sum_`:
every rank sends its gradients (one flat buffer per dtype) to rank 0, rank 0 adds them in rank order,
``((g₀ + g₁) + g₂) + …`` (:func:`ordered_sum`), and broadcasts the sum, so every rank holds the same
bits and takes the same optimiser step. ``MPI_Allreduce`` is not used: the MPI standard leaves its
summation order to the implementation (it may change with the message size or the number of ranks),
so its bits are not guaranteed to repeat. Hence a run on ``P`` ranks gives the same weights every time,
equal bit for bit to one process that accumulates each rank's block of micro-steps separately and adds
the blocks in rank order; with ``P = 1`` it is the single-process run bit for bit. Different ``P``
train on the same samples with the same mean gradient, rounded differently. The cost: rank 0
receives ``(P − 1)`` gradient copies and sends one broadcast, linear in ``P`` where a ring
all-reduce moves ``2(P − 1)/P`` of the gradient per rank — nothing for the compact model (0.66 MB),
a bottleneck for the paper model on many ranks (docs/scale.md, Training on many processes).

**Outputs and resume.** Rank 0 writes the log, the checkpoints and the weights file (``out_dir`` is
read by every rank on resume, so it must be on a file system they share, as the data folder is). On
start, rank 0 decides whether a checkpoint is there to resume from and tells the others; every rank
loads it, and a digest of each rank's model, optimiser, schedule, counters and samples is compared on
rank 0 before the first step (a mismatch ends every rank with the same error).

**Failure.** Every wait is a non-blocking MPI request polled against a deadline
(``--collective-timeout``, :data:`DEFAULT_TIMEOUT` s; before the first step at least
:data:`STARTUP_TIMEOUT` s, as ranks may finish loading their data minutes apart): a rank that
gets no message from a peer within it raises :class:`CollectiveTimeout`, naming the peer and the
optimiser step, and ``kidney train`` prints it and calls ``MPI_Abort``, which ends every rank. A rank that fails with an error prints it
(with its rank) and aborts the run the same way. A rank killed by a signal (out of memory) is
normally seen by the launcher first (``mpiexec`` ends the others and says so); one that hangs, or
leaves without a word, is caught by the deadline.

GPUs: :class:`NCCLCommunicator` is the same interface over NCCL for CuPy arrays — run on one GPU
as a single rank only (see its docstring); training itself runs on the CPU today.
"""
from __future__ import annotations

import contextlib
import hashlib
import pickle
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Communicator", "SingleProcess", "MPICommunicator", "NCCLCommunicator", "CollectiveTimeout",
           "DEFAULT_TIMEOUT", "STARTUP_TIMEOUT", "communicator", "nccl_unavailable", "ordered_sum", "share",
           "train_step", "start", "state_digest"]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for a peer in any collective call
STARTUP_TIMEOUT = 600.0  # before the first step at least this long: ranks load their data at their own pace
ABORT_GRACE = 1.0  # seconds between printing a fatal error and MPI_Abort (see MPICommunicator.abort)

_TAG_GRAD, _TAG_LEN, _TAG_OBJ = 71, 72, 73


class CollectiveTimeout(RuntimeError):
    """A peer sent nothing within the collective timeout: it has died, hangs or cannot be reached."""


def ordered_sum(parts):
    """``((parts[0] + parts[1]) + parts[2]) + …`` elementwise, in this order (a new array)."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


def share(accumulate: int, rank: int, size: int) -> Tuple[int, int]:
    """``(lo, hi)``: the micro-steps ``lo … hi − 1`` of a step's ``accumulate`` that rank ``rank`` of
    ``size`` takes — contiguous blocks in rank order, the first ``accumulate % size`` one longer."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} of {size}")
    if accumulate < size:
        raise ValueError(f"--accumulate {accumulate} is less than the {size} ranks: every rank takes at least "
                         f"one of a step's {accumulate} samples (use --accumulate >= {size})")
    q, extra = divmod(accumulate, size)
    lo = rank * q + min(rank, extra)
    return lo, lo + q + (rank < extra)


def _flat_groups(arrays) -> List[Tuple[list, object]]:
    """``[(indices, flat copy)]``: the arrays concatenated per dtype (first-seen dtype order)."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.dtype.str, []).append(i)
    out = []
    for idx in groups.values():
        xp = sys.modules[type(arrays[idx[0]]).__module__.split(".")[0]]
        out.append((idx, xp.concatenate([arrays[i].reshape(-1) for i in idx])))
    return out


def _scatter(flat, arrays, idx) -> None:
    at = 0
    for i in idx:
        n = arrays[i].size
        arrays[i][...] = flat[at:at + n].reshape(arrays[i].shape)
        at += n


class Communicator:
    """What data-parallel training needs from a process group.

    ``rank`` / ``size``; :meth:`allreduce_sum_` (sum arrays over the ranks, in place, in a fixed order
    so a run is repeatable bit for bit); :meth:`gather` and :meth:`broadcast` of small picklable
    objects; :meth:`barrier`; :meth:`abort` (end every rank). ``context`` (e.g. ``"optimiser step
    12"``) is named in timeout messages.
    """

    rank: int = 0
    size: int = 1
    timeout: float = DEFAULT_TIMEOUT
    context: str = ""
    reduce_seconds: float = 0.0  # time spent in allreduce_sum_ (waiting for peers included)

    @contextlib.contextmanager
    def patience(self, seconds: float):
        """Within the block, wait at least ``seconds`` for a peer (start-up: loading data)."""
        saved = self.timeout
        self.timeout = max(saved, float(seconds))
        try:
            yield self
        finally:
            self.timeout = saved

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum_(self, arrays: Sequence) -> None:
        raise NotImplementedError

    def gather(self, obj) -> Optional[list]:
        """Rank 0: ``[obj of rank 0, obj of rank 1, …]``; other ranks: ``None``."""
        raise NotImplementedError

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class SingleProcess(Communicator):
    """One rank, no messages: the interface's trivial case (and an in-process stand-in for tests)."""

    def allreduce_sum_(self, arrays) -> None:
        t0 = time.perf_counter()
        for idx, flat in _flat_groups(list(arrays)):
            _scatter(ordered_sum([flat]), arrays, idx)
        self.reduce_seconds += time.perf_counter() - t0

    def gather(self, obj):
        return [obj]

    def broadcast(self, obj):
        return obj

    def barrier(self) -> None:
        pass


class MPICommunicator(Communicator):
    """:class:`Communicator` over MPI (mpi4py, any MPI library; tested with MPICH).

    Gradients: point-to-point ``Isend`` / ``Irecv`` to rank 0, :func:`ordered_sum` there, ``Ibcast``
    back. Objects: pickled, a length then the bytes. Every request is polled (``Test``) against
    ``timeout`` seconds; past it :class:`CollectiveTimeout` names the silent peers.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, comm=None):
        from mpi4py import MPI

        if not timeout > 0:
            raise ValueError(f"--collective-timeout must be > 0 seconds, got {timeout}")
        self.MPI = MPI
        self.world = comm if comm is not None else MPI.COMM_WORLD
        self.comm = self.world.Dup()  # our own message space
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout)

    # --- waiting with a deadline -------------------------------------------------------------------
    def _wait(self, requests, peers, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        pending = list(zip(peers, requests))  # peer None: any rank (a barrier)
        pause = 1e-5
        while True:
            pending = [(p, r) for p, r in pending if not r.Test()]
            if not pending:
                return
            if time.monotonic() > deadline:
                who = sorted({p for p, _ in pending if p is not None})
                peer = (f"rank{'s' if len(who) > 1 else ''} {', '.join(map(str, who))}" if who
                        else "every rank")
                at = f" at {self.context}" if self.context else ""
                raise CollectiveTimeout(
                    f"rank {self.rank}: no {what} from {peer} within {self.timeout:g} s{at}: a rank has "
                    f"died, hangs or cannot be reached; ending the run (--collective-timeout sets the wait)")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)

    # --- the interface --------------------------------------------------------------------------------
    def allreduce_sum_(self, arrays) -> None:
        t0 = time.perf_counter()
        arrays = list(arrays)
        for idx, flat in _flat_groups(arrays):
            flat = np.ascontiguousarray(flat)
            if self.size > 1:
                if self.rank == 0:
                    parts = [flat] + [np.empty_like(flat) for _ in range(1, self.size)]
                    reqs = [self.comm.Irecv(parts[r], source=r, tag=_TAG_GRAD) for r in range(1, self.size)]
                    self._wait(reqs, range(1, self.size), "gradients")
                    flat = ordered_sum(parts)
                else:
                    self._wait([self.comm.Isend(flat, dest=0, tag=_TAG_GRAD)], [0], "receipt of gradients")
                self._wait([self.comm.Ibcast(flat, root=0)], [0], "summed gradients")
            _scatter(flat, arrays, idx)
        self.reduce_seconds += time.perf_counter() - t0

    def gather(self, obj):
        if self.size == 1:
            return [obj]
        if self.rank != 0:
            data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
            n = np.array([data.size], dtype=np.int64)
            self._wait([self.comm.Isend(n, dest=0, tag=_TAG_LEN), self.comm.Isend(data, dest=0, tag=_TAG_OBJ)],
                       [0, 0], "receipt of results")
            return None
        sizes = [np.zeros(1, dtype=np.int64) for _ in range(self.size)]
        self._wait([self.comm.Irecv(sizes[r], source=r, tag=_TAG_LEN) for r in range(1, self.size)],
                   range(1, self.size), "results")
        bufs = [None] + [np.empty(int(sizes[r][0]), dtype=np.uint8) for r in range(1, self.size)]
        self._wait([self.comm.Irecv(bufs[r], source=r, tag=_TAG_OBJ) for r in range(1, self.size)],
                   range(1, self.size), "results")
        return [obj] + [pickle.loads(b.tobytes()) for b in bufs[1:]]

    def broadcast(self, obj):
        if self.size == 1:
            return obj
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == 0 else None
        n = np.array([data.size if data is not None else 0], dtype=np.int64)
        self._wait([self.comm.Ibcast(n, root=0)], [0], "broadcast")
        if self.rank != 0:
            data = np.empty(int(n[0]), dtype=np.uint8)
        self._wait([self.comm.Ibcast(data, root=0)], [0], "broadcast")
        return obj if self.rank == 0 else pickle.loads(data.tobytes())

    def barrier(self) -> None:
        if self.size > 1:
            self._wait([self.comm.Ibarrier()], [None], "barrier")

    def abort(self, code: int = 1) -> None:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        # MPI_Abort has the launcher kill every rank at once, and what a rank printed just before can
        # still sit in the pipe to the launcher and be lost with it (seen with MPICH's mpiexec): give
        # the launcher a moment to pass the error message on first.
        time.sleep(ABORT_GRACE)
        self.world.Abort(int(code))
        os._exit(int(code))  # MPI_Abort may return when another rank's abort is already under way


def nccl_unavailable() -> Optional[str]:
    """Why the NCCL communicator cannot be built here (``None`` when CuPy, NCCL and a GPU are there)."""
    try:
        import cupy
        from cupy.cuda import nccl
    except Exception as err:  # noqa: BLE001 - ImportError, or CUDA libraries missing
        return f"{type(err).__name__}: {err}"
    if not getattr(nccl, "available", True):
        return "this CuPy was built without NCCL"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU"
    except Exception as err:  # noqa: BLE001 - no driver
        return f"no CUDA GPU ({err})"
    return None


class NCCLCommunicator(Communicator):
    """:class:`Communicator` over NCCL for CuPy device arrays (one GPU per rank), ranks started by MPI.

    Checked on one GPU as a single rank only (``benchmarks/gpu_check.py``'s NCCL check passed on an
    H200: unique id, all-reduce and broadcast); the two-or-more-rank path (``ncclSend`` /
    ``ncclRecv``) has not run, no CI test covers it, and ``kidney train --distributed`` does not train
    on GPUs yet (it refuses ``--device cuda``). It is here so that a GPU trainer plugs into
    the same interface. The plan it implements: rank 0 makes the NCCL unique id and broadcasts it
    over MPI; gradients stay on the device — each rank's are packed into one device buffer, rank 0
    receives the others' (``ncclSend`` / ``ncclRecv``), adds them in rank order (:func:`ordered_sum`,
    the same fixed order as :class:`MPICommunicator`) and ``ncclBroadcast``\\ s the sum. Completion is
    polled through a CUDA event against the deadline; past it the NCCL communicator is aborted and
    :class:`CollectiveTimeout` raised. Objects and barriers go over MPI.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        reason = nccl_unavailable()
        if reason:
            raise ValueError(f"the NCCL communicator needs CuPy with NCCL and a CUDA GPU ({reason})")
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        self.host = MPICommunicator(timeout)
        self.rank, self.size, self.timeout = self.host.rank, self.host.size, self.host.timeout
        cupy.cuda.Device(self.rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        self.comm = nccl.NcclCommunicator(self.size, self.host.broadcast(uid), self.rank)

    def _dtype(self, a):
        types = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64,
                 "float16": self.nccl.NCCL_FLOAT16}
        if a.dtype.name not in types:
            raise TypeError(f"NCCL all-reduce of {a.dtype} arrays is not supported here")
        return types[a.dtype.name]

    def _wait(self, stream, what: str) -> None:
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record(stream)
        deadline = time.monotonic() + self.timeout
        while not event.done:
            self.comm.check_async_error()
            if time.monotonic() > deadline:
                self.comm.abort()
                at = f" at {self.context}" if self.context else ""
                raise CollectiveTimeout(f"rank {self.rank}: NCCL {what} did not finish within "
                                        f"{self.timeout:g} s{at}; ending the run")
            time.sleep(1e-4)

    def allreduce_sum_(self, arrays) -> None:
        t0 = time.perf_counter()
        arrays = list(arrays)
        stream = self.cupy.cuda.get_current_stream()
        for idx, flat in _flat_groups(arrays):
            n, dt = flat.size, self._dtype(flat)
            if self.size > 1:
                if self.rank == 0:
                    parts = [flat] + [self.cupy.empty_like(flat) for _ in range(1, self.size)]
                    self.nccl.groupStart()
                    for r in range(1, self.size):
                        self.comm.recv(parts[r].data.ptr, n, dt, r, stream.ptr)
                    self.nccl.groupEnd()
                    flat = ordered_sum(parts)
                else:
                    self.nccl.groupStart()
                    self.comm.send(flat.data.ptr, n, dt, 0, stream.ptr)
                    self.nccl.groupEnd()
                self.comm.bcast(flat.data.ptr, n, dt, 0, stream.ptr)
                self._wait(stream, "gradient reduction")
            _scatter(flat, arrays, idx)
        self.reduce_seconds += time.perf_counter() - t0

    def patience(self, seconds: float):
        return self.host.patience(seconds)  # objects and barriers go over MPI

    def gather(self, obj):
        return self.host.gather(obj)

    def broadcast(self, obj):
        return self.host.broadcast(obj)

    def barrier(self) -> None:
        self.host.barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.abort()
        self.host.abort(code)


def communicator(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> Communicator:
    """The process group this process was started in (``mpiexec`` / ``srun``); mpi4py is imported
    here, only when asked. ``ValueError`` (one line) when MPI, or for ``cuda`` NCCL, is missing."""
    if not timeout > 0:
        raise ValueError(f"--collective-timeout must be > 0 seconds, got {timeout}")
    if device == "cuda":
        reason = nccl_unavailable()
        if reason:
            raise ValueError("--distributed --device cuda needs CuPy with NCCL and a CUDA GPU: pip install "
                             f"'sparseconv[gpu,mpi]' ({reason})")
        return NCCLCommunicator(timeout)
    try:
        from mpi4py import MPI  # noqa: F401 - initialises MPI
    except (ImportError, RuntimeError, OSError) as err:
        raise ValueError(f"--distributed needs mpi4py and an MPI library: pip install 'sparseconv[mpi]' "
                         f"({type(err).__name__}: {err})") from None
    return MPICommunicator(timeout)


# --- the trainer's side ----------------------------------------------------------------------------

def state_digest(trainer) -> str:
    """sha256 of what must be equal on every rank before a step: model, optimiser, schedule,
    counters, config and samples."""
    from sparseconv.nn.checkpoint import flatten

    h = hashlib.sha256()
    tree = {"model": trainer.model.state_dict(), "optimizer": trainer.opt.state_dict(),
            "scheduler": trainer.sched.state_dict(), "accumulator": trainer.acc.state_dict(),
            "counters": [trainer.micro_step, trainer.opt_step], "config": repr(trainer.cfg.to_dict()),
            "samples": [s.case_id for s in trainer.samples]}
    for key, value in sorted(flatten(tree).items()):
        a = np.ascontiguousarray(value)
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def start(trainer, resume: bool, progress: bool = True) -> None:
    """Before the first step: resume (rank 0 decides, every rank loads the same checkpoint), then
    check that every rank holds the same state; ``ValueError`` on every rank if not."""
    comm = trainer.comm
    comm.context = "start-up (before the first step)"
    with comm.patience(STARTUP_TIMEOUT):  # the ranks may finish loading their data minutes apart
        _start(trainer, resume, progress)


def _start(trainer, resume: bool, progress: bool) -> None:
    comm = trainer.comm
    found = comm.broadcast(bool(resume and trainer.checkpoint_path.exists()))
    if found:
        trainer.load_checkpoint()
        saved = getattr(trainer, "resumed_ranks", comm.size)
        if comm.is_root and progress:
            print(f"resumed from {trainer.checkpoint_path} at step {trainer.opt_step} on {comm.size} rank(s)",
                  file=sys.stderr)
        if comm.is_root and saved != comm.size:
            print(f"warning: the checkpoint was made on {saved} rank(s), this run has {comm.size}: the same "
                  "samples and mean gradients, summed in another order (the weights will not be bitwise "
                  f"those of an uninterrupted {saved}-rank run)", file=sys.stderr)
    digests = comm.gather(state_digest(trainer))
    differ = comm.broadcast(None if digests is None else [r for r, d in enumerate(digests) if d != digests[0]])
    if differ:
        raise ValueError(f"rank(s) {', '.join(map(str, differ))} start from another state than rank 0 (model, "
                         "optimiser, checkpoint, data or config differ: same code, data and out folder on "
                         "every rank?)")
    share(trainer.cfg.accumulate, comm.rank, comm.size)  # refuses accumulate < ranks on every rank


def train_step(trainer):
    """One optimiser step on this rank's share of the step's samples (see the module docstring).

    Returns ``(losses, dices, n_active, extra)`` of all the step's micro-steps in order on rank 0
    (``n_active``: the last one's active voxels; ``extra``: ``{"allreduce_seconds": …}``), and
    ``(None, None, None, {})`` on the other ranks. ``comm.fault = (rank, step, "exit" | "kill")``
    is for the test suite (``kidney train --test-fault``): that rank leaves without a word, or is
    killed, at the start of that optimiser step.
    """
    from .train import loss_and_dice

    comm, c = trainer.comm, trainer.cfg
    step = trainer.opt_step + 1
    comm.context = f"optimiser step {step}"
    fault = getattr(comm, "fault", None)
    if fault is not None and fault[0] == comm.rank and fault[1] == step:
        _fault(fault[2])
    first = trainer.micro_step
    lo, hi = share(c.accumulate, comm.rank, comm.size)
    stats = []
    for m in range(first + lo, first + hi):
        _, x, t = trainer.draw(m)
        loss, dice = loss_and_dice(trainer.model, x, t, c.ds_weights, c.loss)
        trainer.acc.backward(loss)
        stats.append((float(loss.item()), dice, int(len(x))))
    # a parameter that got no gradient on any rank keeps grad None (AdamW skips it, as in one process)
    params = trainer.opt._params()
    grads = [p.grad if p.grad is not None else np.zeros_like(p.data) for p in params]
    present = np.array([p.grad is not None for p in params], dtype=grads[0].dtype)
    t0 = time.perf_counter()
    comm.allreduce_sum_(grads + [present])
    reduce_s = time.perf_counter() - t0
    for p, g, here in zip(params, grads, present):
        p.grad = g if here > 0 else None
    acc = trainer.acc
    if acc.clip_norm is not None:
        from sparseconv.optim import clip_grad_norm_
        acc.last_grad_norm = clip_grad_norm_(params, acc.clip_norm)
    trainer.opt.step()
    trainer.opt.zero_grad()
    trainer.micro_step = first + c.accumulate
    acc.count = trainer.micro_step  # as one process's accumulator after its step
    gathered = comm.gather(stats)
    if gathered is None:
        return None, None, None, {}
    stats = [s for part in gathered for s in part]
    return ([s[0] for s in stats], [s[1] for s in stats], stats[-1][2],
            {"allreduce_seconds": round(reduce_s, 6)})


def _fault(mode: str) -> None:
    """For the test suite only (``kidney train --test-fault``)."""
    import os
    import signal

    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(0)  # leave quietly: MPI is finalised, the launcher sees a normal exit
