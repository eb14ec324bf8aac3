"""Optimisers against hand-computed updates, the schedule's values, accumulation, clipping, and
exact resume from a checkpoint file."""
import math

import numpy as np
import pytest

import sparseconv
from sparseconv import functional as F, nn, optim
from sparseconv.nn import Parameter, load_checkpoint, save_checkpoint
from sparseconv.toydata import make_batch


def param(values):
    return Parameter(np.array(values, dtype=np.float64))


def test_sgd_plain_and_momentum_by_hand():
    p = param([1.0, -2.0])
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.array([0.5, 1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.1])

    p = param([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    g1, g2 = 0.5, -0.25
    p.grad = np.array([g1])
    opt.step()
    d1 = g1 + 0.01 * 1.0
    w1 = 1.0 - 0.1 * d1  # first step: buffer = d
    np.testing.assert_allclose(p.data, [w1])
    p.grad = np.array([g2])
    opt.step()
    d2 = g2 + 0.01 * w1
    buf = 0.9 * d1 + d2
    np.testing.assert_allclose(p.data, [w1 - 0.1 * buf])


def test_adamw_by_hand():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.95, 1e-8, 0.1
    p = param([0.5, -1.0])
    opt = optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    w = p.data.copy()
    m = np.zeros(2)
    v = np.zeros(2)
    for t, g in enumerate([np.array([0.1, -0.3]), np.array([0.2, 0.4]), np.array([-0.5, 0.0])], 1):
        p.grad = g
        opt.step()
        w = w * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p.data, w, rtol=1e-14, atol=1e-15)


def test_params_without_grad_are_skipped_and_groups_keep_their_own_settings():
    a, b = param([1.0]), param([1.0])
    opt = optim.AdamW([{"params": [a], "weight_decay": 0.5}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
    a.grad = np.zeros(1)
    opt.step()
    np.testing.assert_allclose(a.data, [1.0 - 0.1 * 0.5])  # decay only (zero gradient)
    np.testing.assert_array_equal(b.data, [1.0])  # no grad: untouched
    with pytest.raises(ValueError, match="more than one param group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_param_groups_no_decay_on_biases_norms_grn():
    net = nn.SparseUNet(1, 2, dims=(4, 8), depths=(1, 1))
    decay, no_decay = optim.param_groups(net, weight_decay=1e-5)
    names = {id(p): n for n, p in net.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("weight") and "norm" not in n for n in decay_names)
    assert any(n.endswith("dwconv.weight") for n in decay_names)
    assert any(".grn.gamma" in n for n in no_decay_names) and any(n.endswith(".bias") for n in no_decay_names)
    assert "stem.1.weight" in no_decay_names  # LayerNorm weight
    assert len(decay_names) + len(no_decay_names) == len(names)


def test_warmup_cosine_values():
    f = optim.warmup_cosine
    # the paper's shape: 1 "epoch" (10 steps) warm-up, cosine over the last 400 of 500 epochs
    kw = dict(base_lr=5e-4, warmup_steps=10, total_steps=5000, decay_steps=4000)
    assert f(0, **kw) == pytest.approx(5e-5)
    assert f(9, **kw) == pytest.approx(5e-4)
    assert f(500, **kw) == 5e-4 and f(999, **kw) == 5e-4  # constant until the cosine starts at 1000
    assert f(1000, **kw) == pytest.approx(5e-4)
    assert f(3000, **kw) == pytest.approx(2.5e-4)  # half-way: half the rate
    assert f(2000, **kw) == pytest.approx(5e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(5000, **kw) == 0.0 and f(6000, **kw) == 0.0
    assert f(55, 1.0, 10, 100, min_lr=0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # default: decay after warm-up

    p = param([1.0])
    opt = optim.SGD([p], lr=2.0)
    sched = optim.WarmupCosine(opt, warmup_steps=2, total_steps=6)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(6):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [1.0, 2.0, 2.0, 2 * 0.5 * (1 + math.cos(math.pi / 4)), 1.0,
                                     2 * 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])


def _quadratic_grads(p, batch):
    (((p - batch) * (p - batch)).sum()).backward()


def test_gradient_accumulation_equals_mean_loss_step():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(3) for _ in range(4)]
    p1, p2 = param([0.1, 0.2, 0.3]), param([0.1, 0.2, 0.3])
    opt1 = optim.SGD([p1], lr=0.1)
    acc = optim.GradientAccumulator(optim.SGD([p2], lr=0.1), every=4)
    for i, b in enumerate(batches):
        loss = ((p2 - b) * (p2 - b)).sum()
        acc.backward(loss)
        assert acc.step() == (i == 3)
    mean = sum(((p1 - b) * (p1 - b)).sum() for b in batches) * 0.25
    mean.backward()
    opt1.step()
    np.testing.assert_allclose(p2.data, p1.data, rtol=1e-14)
    assert p2.grad is None  # zeroed after the step


def test_clip_grad_norm_and_value():
    a, b = param([0.0, 0.0]), param([0.0])
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(np.r_[a.grad, b.grad], [0.6, 0.0, 0.8], rtol=1e-5)
    optim.clip_grad_norm_([a, b], 10.0)
    np.testing.assert_allclose(np.r_[a.grad, b.grad], [0.6, 0.0, 0.8], rtol=1e-5)  # under the limit: untouched
    a.grad = np.array([-3.0, 0.5])
    optim.clip_grad_value_([a], 1.0)
    np.testing.assert_array_equal(a.grad, [-1.0, 0.5])


def _setup(seed=0):
    sparseconv.manual_seed(seed)
    model = nn.SparseUNet(1, 2, dims=(4, 8), depths=(1, 1), init="default")
    opt = optim.AdamW(optim.param_groups(model, 1e-4), lr=3e-3, betas=(0.9, 0.95), eps=1e-12)
    sched = optim.WarmupCosine(opt, warmup_steps=2, total_steps=8)
    acc = optim.GradientAccumulator(opt, every=2, clip_norm=1.0)
    return model, opt, sched, acc


def _train(model, sched, acc, steps):
    for step in steps:
        x, t = make_batch(np.random.default_rng(1000 + step), batch_size=1, size=16)  # data seeded per step
        acc.backward(F.soft_dice_loss(model(x), t))
        if acc.step():
            sched.step()


def test_save_load_resume_is_bitwise_identical(tmp_path):
    model, opt, sched, acc = _setup()
    _train(model, sched, acc, range(7))  # odd: the resume point sits mid-accumulation
    ref = model.state_dict()

    model, opt, sched, acc = _setup()
    _train(model, sched, acc, range(3))
    save_checkpoint(tmp_path / "ckpt.npz", model=model, optimizer=opt, scheduler=sched, accumulator=acc,
                    extra={"step": 3})
    pending = {n: p.grad.copy() for n, p in model.named_parameters()}  # the half-accumulated micro-batch

    model2, opt2, sched2, acc2 = _setup(seed=99)  # fresh objects, different initial weights
    tree = load_checkpoint(tmp_path / "ckpt.npz", model=model2, optimizer=opt2, scheduler=sched2,
                           accumulator=acc2)
    assert int(tree["extra"]["step"]) == 3
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)
    for n, p in model2.named_parameters():  # gradients are not checkpointed: restore the pending one
        p.grad = pending[n]
    _train(model2, sched2, acc2, range(3, 7))
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)
