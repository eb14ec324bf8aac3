"""Modules against their dense twins at the active sites (forward and gradients), GRN and norms
against direct NumPy formulas, a 2-level U-Net gradient check, and state_dict / save / load."""
import numpy as np
import pytest

import sparseconv
from sparseconv import SparseTensor, Tensor, functional as F, nn
from sparseconv.autograd import gradcheck

try:
    from sparseconv import dense as D
    HAVE_DENSE = hasattr(D, "conv3d")
except ImportError:  # pragma: no cover - the dense twins ship with the package
    HAVE_DENSE = False
needs_dense = pytest.mark.skipif(not HAVE_DENSE, reason="sparseconv.dense twins not available")


def random_sparse(rng, shape=(6, 6, 6), batch=2, channels=3, density=0.35, dtype=np.float64):
    mask = rng.random((batch,) + tuple(shape)) < density
    coords = np.argwhere(mask).astype(np.int32)
    feats = rng.standard_normal((len(coords), channels)).astype(dtype)
    return SparseTensor(coords, feats, shape, batch_size=batch)


def at_sites(dense, x):
    """Rows of a dense ``(B, C, D, H, W)`` array at ``x``'s sites → ``(N, C)``."""
    b, z, y, xx = x.coords.T
    return dense[b, :, z, y, xx]


def scatter(rows, x):
    """``(N, C)`` rows at ``x``'s sites → dense ``(B, C, D, H, W)`` with zeros elsewhere."""
    return x.replace_feats(np.asarray(rows)).dense()


def run(module, x, rng):
    """Forward with leaf features, backward of Σ out·R. Returns (out, R, d_feats)."""
    f = Tensor(x.feats.copy(), requires_grad=True)
    module.zero_grad()
    y = module(x.replace_feats(f))
    R = rng.standard_normal(y.feats.shape)
    (y.feats_tensor * R).sum().backward()
    return y, R, f.grad


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def dense_conv_weight(w):
    k = round(w.shape[0] ** (1 / 3))
    return w.reshape(k, k, k, w.shape[1], w.shape[2]).transpose(4, 3, 0, 1, 2)


# --- convolutions vs dense twins ------------------------------------------------------------------

@needs_dense
@pytest.mark.parametrize("k,dilation", [(3, 1), (3, 2), (5, 1)])
def test_subm_conv_matches_dense(rng, k, dilation):
    x = random_sparse(rng)
    conv = nn.SubMConv3d(3, 4, k, dilation=dilation, dtype=np.float64)
    y, R, dx = run(conv, x, rng)
    W, b = conv.weight.data, conv.bias.data
    xd, Wd = x.dense(), dense_conv_weight(W)
    pad = (k // 2) * dilation
    np.testing.assert_allclose(y.feats, at_sites(D.conv3d(xd, Wd, b, 1, pad, dilation), x), atol=1e-12)
    gx, gw, gb = D.conv3d_backward(scatter(R, x), xd, Wd, 1, pad, dilation)
    np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-12)
    np.testing.assert_allclose(dense_conv_weight(conv.weight.grad), gw, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, gb, atol=1e-12)


@needs_dense
def test_depthwise_conv_matches_dense(rng):
    x = random_sparse(rng)
    for conv in (nn.DepthwiseSubMConv3d(3, 3, dtype=np.float64), nn.SubMConv3d(3, 3, 3, groups=3, dtype=np.float64)):
        y, R, dx = run(conv, x, rng)
        Wd = conv.weight.data.reshape(3, 3, 3, 3).transpose(3, 0, 1, 2)
        xd = x.dense()
        np.testing.assert_allclose(y.feats, at_sites(D.depthwise_conv3d(xd, Wd, conv.bias.data, 1), x), atol=1e-12)
        gx, gw, gb = D.depthwise_conv3d_backward(scatter(R, x), xd, Wd, 1)
        np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-12)
        np.testing.assert_allclose(conv.weight.grad.reshape(3, 3, 3, 3).transpose(3, 0, 1, 2), gw, atol=1e-12)
        np.testing.assert_allclose(conv.bias.grad, gb, atol=1e-12)


@needs_dense
@pytest.mark.parametrize("shape,k,s,p", [((6, 6, 6), 2, 2, 0), ((7, 5, 6), 3, 2, 1), ((5, 5, 5), 3, 1, 1)])
def test_down_conv_matches_dense(rng, shape, k, s, p):
    x = random_sparse(rng, shape)
    conv = nn.SparseConv3d(3, 4, k, s, p, dtype=np.float64)
    y, R, dx = run(conv, x, rng)
    Wd, xd = dense_conv_weight(conv.weight.data), x.dense()
    ref = D.conv3d(xd, Wd, conv.bias.data, s, p)
    assert y.spatial_shape == ref.shape[2:]
    np.testing.assert_allclose(y.feats, at_sites(ref, y), atol=1e-12)
    # output sites = exactly where a window holds an active input
    reach = D.conv3d(_mask(x), np.ones((1, 1, k, k, k)), None, s, p)
    np.testing.assert_array_equal(np.argwhere(reach[:, 0] > 0), y.coords)
    gx, gw, gb = D.conv3d_backward(scatter(R, y), xd, Wd, s, p)
    np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-12)
    np.testing.assert_allclose(dense_conv_weight(conv.weight.grad), gw, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, gb, atol=1e-12)


def _mask(x):
    m = np.zeros((x.batch_size, 1) + x.spatial_shape)
    b, z, y, xx = x.coords.T
    m[b, 0, z, y, xx] = 1
    return m


@needs_dense
def test_inverse_conv_matches_dense_transpose(rng):
    x = random_sparse(rng, (6, 6, 6))
    coarse = nn.SparseConv3d(3, 4, 2, 2, dtype=np.float64)(x)
    coarse = coarse.replace_feats(rng.standard_normal((len(coarse), 4)))
    up = nn.SparseInverseConv3d(4, 2, 2, dtype=np.float64)
    y, R, dx = run(up, coarse, rng)
    assert y.same_sites(x)
    Wt = up.weight.data.reshape(2, 2, 2, 4, 2).transpose(3, 4, 0, 1, 2)  # (Cin, Cout, kz, ky, kx)
    cd = coarse.dense()
    np.testing.assert_allclose(y.feats, at_sites(D.conv_transpose3d(cd, Wt, up.bias.data, 2), x), atol=1e-12)
    gx, gw, gb = D.conv_transpose3d_backward(scatter(R, x), cd, Wt, 2)
    np.testing.assert_allclose(dx, at_sites(gx, coarse), atol=1e-12)
    np.testing.assert_allclose(up.weight.grad.reshape(2, 2, 2, 4, 2).transpose(3, 4, 0, 1, 2), gw, atol=1e-12)
    np.testing.assert_allclose(up.bias.grad, gb, atol=1e-12)


# --- pointwise modules vs dense twins / formulas --------------------------------------------------

@needs_dense
def test_linear_layernorm_gelu_grn_match_dense(rng):
    x = random_sparse(rng, channels=4)
    xd, mask = x.dense(), _mask(x)[:, 0] > 0
    lin = nn.Linear(4, 5, dtype=np.float64)
    y, R, dx = run(lin, x, rng)
    np.testing.assert_allclose(y.feats, at_sites(D.linear(xd, lin.weight.data.T, lin.bias.data), x), atol=1e-12)
    gx, gw, gb = D.linear_backward(scatter(R, x), xd, lin.weight.data.T)
    np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, gw.T, atol=1e-12)
    np.testing.assert_allclose(lin.bias.grad, gb, atol=1e-12)

    ln = nn.LayerNorm(4, dtype=np.float64)
    ln.weight.data[:], ln.bias.data[:] = rng.standard_normal(4), rng.standard_normal(4)
    y, R, dx = run(ln, x, rng)
    ref = D.layer_norm_channels(xd, ln.weight.data, ln.bias.data, 1e-6)
    np.testing.assert_allclose(y.feats, at_sites(ref, x), atol=1e-10)
    gx, gg, gb = D.layer_norm_channels_backward(scatter(R, x), xd, ln.weight.data, 1e-6)
    np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-9)
    np.testing.assert_allclose(ln.weight.grad, gg, atol=1e-9)
    np.testing.assert_allclose(ln.bias.grad, gb, atol=1e-12)

    y, R, dx = run(nn.GELU(), x, rng)
    np.testing.assert_allclose(y.feats, at_sites(D.gelu(xd), x), atol=1e-12)
    np.testing.assert_allclose(dx, at_sites(D.gelu_backward(scatter(R, x), xd), x), atol=1e-12)

    grn = nn.GRN(4, dtype=np.float64)
    grn.gamma.data[:], grn.beta.data[:] = rng.standard_normal(4), rng.standard_normal(4)
    y, R, dx = run(grn, x, rng)
    np.testing.assert_allclose(y.feats, at_sites(D.grn(xd, grn.gamma.data, grn.beta.data, mask), x), atol=1e-12)
    gx, gg, gb = D.grn_backward(scatter(R, x), xd, grn.gamma.data, mask)
    np.testing.assert_allclose(dx, at_sites(gx, x), atol=1e-10)
    np.testing.assert_allclose(grn.gamma.grad, gg, atol=1e-10)
    np.testing.assert_allclose(grn.beta.grad, gb, atol=1e-12)


def test_grn_formula_per_sample(rng):
    x = random_sparse(rng, channels=4, batch=3)
    grn = nn.GRN(4, dtype=np.float64)
    grn.gamma.data[:], grn.beta.data[:] = rng.standard_normal(4), rng.standard_normal(4)
    y = grn(x).feats
    for s in range(3):
        rows = x.coords[:, 0] == s
        xs = x.feats[rows]
        G = np.sqrt((xs ** 2).sum(axis=0))
        N = G / (G.mean() + 1e-6)
        np.testing.assert_allclose(y[rows], grn.gamma.data * (xs * N) + grn.beta.data + xs, atol=1e-12)


def test_batchnorm_formula_running_stats_and_eval(rng):
    x = random_sparse(rng, channels=3)
    bn = nn.BatchNorm(3, momentum=0.2, dtype=np.float64)
    bn.weight.data[:], bn.bias.data[:] = [1.0, 2.0, 0.5], [0.0, -1.0, 3.0]
    f = x.feats
    y = bn(x).feats
    mu, var = f.mean(axis=0), f.var(axis=0)
    np.testing.assert_allclose(y, (f - mu) / np.sqrt(var + 1e-5) * bn.weight.data + bn.bias.data, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.2 * mu, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * f.var(axis=0, ddof=1), atol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y = bn(x).feats
    np.testing.assert_allclose(y, (f - rm) / np.sqrt(rv + 1e-5) * bn.weight.data + bn.bias.data, atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, rm)  # eval leaves the statistics alone
    with pytest.raises(ValueError, match="more than 1"):
        nn.BatchNorm(3)(SparseTensor(x.coords[:1], x.feats[:1].astype(np.float32), x.spatial_shape))


def test_avg_pool_is_mean_of_active_children(rng):
    x = random_sparse(rng, (5, 6, 7))
    y, R, dx = run(nn.AvgPool(2), x, rng)
    assert y.spatial_shape == (3, 3, 4)
    m = _mask(x)
    pad = [(0, 0)] * 2 + [(0, n % 2) for n in x.spatial_shape]
    def pool_sum(a):
        a = np.pad(a, pad)
        B, C, Dd, H, W = a.shape
        return a.reshape(B, C, Dd // 2, 2, H // 2, 2, W // 2, 2).sum(axis=(3, 5, 7))
    mean = pool_sum(x.dense()) / np.maximum(pool_sum(m), 1)
    np.testing.assert_allclose(y.feats, at_sites(mean, y), atol=1e-12)
    # each fine voxel receives its parent's gradient / number of active children
    parent_count = at_sites(pool_sum(m), y)[:, 0]
    kmap, _ = sparseconv.kmap.down_map(x, 2, 2)
    for o in range(len(y)):
        for i in kmap.neighbors[o][kmap.neighbors[o] >= 0]:
            np.testing.assert_allclose(dx[i], R[o] / parent_count[o], atol=1e-12)


def test_activation_modules(rng):
    x = random_sparse(rng)
    f = x.feats
    np.testing.assert_allclose(nn.ReLU()(x).feats, np.maximum(f, 0))
    np.testing.assert_allclose(nn.LeakyReLU(0.1)(x).feats, np.where(f > 0, f, 0.1 * f))
    np.testing.assert_allclose(nn.Sigmoid()(x).feats, 1 / (1 + np.exp(-f)))
    d = nn.Dropout(0.5, seed=3)
    assert (d(x).feats == 0).any()
    assert d.eval()(x) is x


# --- whole network --------------------------------------------------------------------------------

def test_two_level_unet_gradcheck_end_to_end(rng):
    """conv, LN, GELU, GRN, down, inverse, skip sum and head, all through one finite-difference check."""
    sparseconv.manual_seed(3)
    net = nn.SparseUNet(2, 2, dims=(3, 4), depths=(1, 1), decoder_depth=1, stem_kernel=3,
                        init="default", dtype=np.float64)
    for p in net.parameters():  # GRN γ/β start at 0 and LN at 1/0: randomise so every path matters
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    x = random_sparse(rng, (6, 6, 6), batch=2, channels=2, density=0.3)
    f = Tensor(x.feats.copy(), requires_grad=True)
    xs = x.replace_feats(f)
    params = net.parameters()
    names = [n for n, _ in net.named_parameters()]
    assert any("grn" in n for n in names) and any("downs" in n for n in names) and any("ups" in n for n in names)
    gradcheck(lambda: net(xs), params + [f], max_per_tensor=6, rtol=1e-5, atol=1e-6)


# --- parameters, modes, state ---------------------------------------------------------------------

def test_names_modes_and_counts():
    sparseconv.manual_seed(0)
    net = nn.Sequential(nn.SubMConv3d(1, 4, 3, bias=False), nn.BatchNorm(4), nn.ReLU(),
                        nn.SparseConv3d(4, 8, 2, 2), nn.Dropout(0.1))
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias", "3.weight", "3.bias"]
    assert net.num_parameters() == 27 * 4 + 4 + 4 + 8 * 4 * 8 + 8
    assert set(net.state_dict()) == set(names) | {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    assert "SparseConv3d(4, 8" in repr(net)


def test_seeded_init_is_reproducible_and_trunc_normal():
    sparseconv.manual_seed(42)
    a = nn.SubMConv3d(8, 16, 3, init="trunc_normal")
    sparseconv.manual_seed(42)
    b = nn.SubMConv3d(8, 16, 3, init="trunc_normal")
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    w = a.weight.data
    assert np.abs(w).max() <= 0.04 + 1e-7 and 0.015 < w.std() < 0.02
    assert not a.bias.data.any()
    c = nn.Linear(64, 10)  # default: U(±1/√fan_in)
    assert np.abs(c.weight.data).max() <= 1 / 8 and c.weight.shape == (10, 64)
    net = sparseconv.init.convnext_init(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GRN(4)))
    assert not net[0].bias.data.any() and np.all(net[1].weight.data == 1) and not net[2].gamma.data.any()


def test_state_dict_roundtrip_and_save_load(tmp_path, rng):
    sparseconv.manual_seed(1)
    net = nn.SparseUNet(1, 2, dims=(4, 8), depths=(1, 1))
    x = random_sparse(rng, channels=1, dtype=np.float32)
    net.train()
    for _ in range(2):
        net(x)
    path = tmp_path / "model.npz"
    net.save(path)
    sparseconv.manual_seed(2)
    other = nn.SparseUNet(1, 2, dims=(4, 8), depths=(1, 1))
    assert not np.array_equal(other.stem[0].weight.data, net.stem[0].weight.data)
    other.load(path)
    for (n1, a), (n2, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert n1 == n2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    net.eval(), other.eval()
    np.testing.assert_array_equal(net(x).feats, other(x).feats)


def test_load_mismatch_names_keys_and_changes_nothing(tmp_path):
    sparseconv.manual_seed(1)
    small = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    big = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.BatchNorm(5))
    path = tmp_path / "small.npz"
    small.save(path)
    before = big.state_dict()
    with pytest.raises(ValueError) as err:
        big.load(path)
    msg = str(err.value)
    assert "missing keys" in msg and "2.running_mean" in msg
    assert "0.weight: file (4, 3) vs model (5, 3)" in msg and "nothing was loaded" in msg
    for k, v in big.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    state = small.state_dict()
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        small.load_state_dict(state)
    missing, unexpected = small.load_state_dict(state, strict=False)
    assert unexpected == ["extra.weight"] and missing == []


def test_astype_float64_and_float32_weights_refuse_float64_feats(rng):
    conv = nn.SubMConv3d(3, 2, 3)
    x = random_sparse(rng)
    with pytest.raises(ValueError, match="dtype"):
        conv(x)
    conv.astype(np.float64)
    assert conv(x).feats.dtype == np.float64


def test_pooled_targets_line_up_with_the_down_conv_level(rng):
    """Deep supervision: avg-pooled soft targets sit on exactly the coarse sites of SparseConv3d(k2, s2)."""
    x = random_sparse(rng, channels=1)
    coarse = nn.SparseConv3d(1, 4, 2, 2, dtype=np.float64)(x)
    target = x.replace_feats((rng.random((len(x), 2)) < 0.5).astype(np.float64))
    pooled = F.avg_pool(target)
    assert pooled.same_sites(coarse) and pooled.cache is coarse.cache
    assert np.all((pooled.feats >= 0) & (pooled.feats <= 1))
    F.soft_dice_loss(coarse.replace_feats(coarse.feats[:, :2]), pooled)  # accepted as aligned
