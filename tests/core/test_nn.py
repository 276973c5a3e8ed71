"""Tests for minigrad.nn: layers (forward against NumPy, gradients by gradcheck in float64,
dtype float32 kept), PyTorch's default initializations drawn from a Generator, nn.init,
Module state_dict / load_state_dict, gradient clipping and functional_call."""
from collections import OrderedDict

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
from minigrad.nn.utils import clip_grad_norm_, clip_grad_value_, functional_call
from minigrad.testing import gradcheck

F64 = np.float64


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def check_module_grads(module, *inputs):
    """gradcheck of module(*inputs) with respect to the float inputs and every parameter."""
    names = [name for name, _ in module.named_parameters()]
    n = len(inputs)

    def fn(*args):
        return functional_call(module, dict(zip(names, args[n:])), args[:n])

    return gradcheck(fn, [*inputs, *module.parameters()])


# ----------------------------------------------------------------------------- Linear
def test_linear_forward_matches_numpy_on_batched_input(rng):
    lin = nn.Linear(3, 4, dtype=F64, rng=rng)
    x = rng.standard_normal((2, 5, 3))
    y = lin(mg.Tensor(x))
    assert y.shape == (2, 5, 4)
    np.testing.assert_allclose(y.data, x @ lin.weight.data.T + lin.bias.data, rtol=1e-12)


def test_linear_init_is_pytorch_default_drawn_from_rng():
    # kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(in), 1/sqrt(in)); the bias uses the same bound
    lin = nn.Linear(16, 3, dtype=F64, rng=np.random.default_rng(7))
    draws = np.random.default_rng(7)
    np.testing.assert_array_equal(lin.weight.data, draws.uniform(-0.25, 0.25, (3, 16)))
    np.testing.assert_array_equal(lin.bias.data, draws.uniform(-0.25, 0.25, 3))
    big = nn.Linear(100, 200, rng=np.random.default_rng(0))
    assert np.abs(big.weight.data).max() <= 0.1
    assert np.abs(big.weight.data).max() > 0.099  # fills the range: 20000 draws


def test_linear_without_bias_and_repr(rng):
    lin = nn.Linear(3, 2, bias=False, dtype=F64, rng=rng)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(lin(mg.Tensor(x)).data, x @ lin.weight.data.T, rtol=1e-12)
    assert repr(lin) == "Linear(in_features=3, out_features=2, bias=False)"
    assert repr(nn.Linear(3, 4)) == "Linear(in_features=3, out_features=4, bias=True)"


def test_linear_gradients(rng):
    lin = nn.Linear(3, 2, dtype=F64, rng=rng)
    x = mg.Tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    assert check_module_grads(lin, x)


def test_linear_float32_forward_and_backward(rng):
    lin = nn.Linear(3, 2, rng=rng)
    x = mg.Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    y = lin(x)
    y.sum().backward()
    assert lin.weight.dtype == lin.bias.dtype == y.dtype == np.float32
    assert lin.weight.grad.dtype == lin.bias.grad.dtype == x.grad.dtype == np.float32
    np.testing.assert_allclose(lin.bias.grad.data, [4, 4])


def test_linear_bad_input_names_shapes(rng):
    lin = nn.Linear(3, 2, rng=rng)
    with pytest.raises(ValueError, match=r"Linear: input of shape \(4, 5\) must end in in_features=3"):
        lin(mg.Tensor(np.zeros((4, 5), np.float32)))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 2)
    with pytest.raises(TypeError, match="floating-point"):
        nn.Linear(2, 2, dtype=np.int32)


# ----------------------------------------------------------------------------- Embedding
def test_embedding_init_forward_and_padding(rng):
    emb = nn.Embedding(5, 3, padding_idx=-1, dtype=F64, rng=np.random.default_rng(3))
    expected = np.random.default_rng(3).standard_normal((5, 3))
    expected[4] = 0
    assert emb.padding_idx == 4
    np.testing.assert_array_equal(emb.weight.data, expected)
    idx = np.array([[0, 4, 2], [2, 2, 1]])
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.data, expected[idx])
    (out * mg.Tensor(rng.standard_normal(out.shape))).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.data[4], 0)  # the padding row learns nothing
    assert np.all(emb.weight.grad.data[[0, 1, 2]] != 0) and np.all(emb.weight.grad.data[3] == 0)
    assert repr(emb) == "Embedding(5, 3, padding_idx=4)"


def test_embedding_gradients_and_errors(rng):
    emb = nn.Embedding(4, 2, dtype=F64, rng=rng)
    idx = np.array([1, 3, 1])
    assert check_module_grads(emb, idx)
    assert emb(idx).dtype == F64 and nn.Embedding(4, 2, rng=rng)(idx).dtype == np.float32
    with pytest.raises(ValueError, match="out of range for a table of 4 rows"):
        emb(np.array([4]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 2, padding_idx=4)


# ----------------------------------------------------------------------------- Dropout
def test_dropout_mask_comes_from_rng_and_eval_is_identity():
    x = np.arange(1.0, 13.0).reshape(3, 4).astype(np.float32)
    drop = nn.Dropout(0.25, rng=np.random.default_rng(5))
    keep = np.random.default_rng(5).random((3, 4)) >= 0.25
    xt = mg.Tensor(x, requires_grad=True)
    y = drop(xt)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, np.where(keep, x / 0.75, 0), rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(xt.grad.data, np.where(keep, 1 / 0.75, 0), rtol=1e-6)
    drop.eval()
    np.testing.assert_array_equal(drop(mg.Tensor(x)).data, x)
    assert repr(drop) == "Dropout(p=0.25)"
    with pytest.raises(ValueError, match=r"Dropout: p should be a number in range \[0, 1\]"):
        nn.Dropout(1.5)


# ----------------------------------------------------------------------------- LayerNorm
def test_layernorm_forward_matches_numpy_over_last_dims(rng):
    ln = nn.LayerNorm((3, 4), dtype=F64)
    assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    with mg.no_grad():
        ln.weight.copy_(rng.standard_normal((3, 4)))
        ln.bias.copy_(rng.standard_normal((3, 4)))
    x = rng.standard_normal((2, 3, 4)) * 5 + 2
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, as PyTorch
    expected = (x - mu) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(mg.Tensor(x)).data, expected, rtol=1e-10, atol=1e-12)


def test_layernorm_gradients(rng):
    ln = nn.LayerNorm(4, dtype=F64)
    with mg.no_grad():
        ln.weight.copy_(rng.standard_normal(4))
    x = mg.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert check_module_grads(ln, x)


def test_layernorm_without_affine_float32_and_errors(rng):
    ln = nn.LayerNorm(4, elementwise_affine=False)
    assert list(ln.parameters()) == []
    x = rng.standard_normal((2, 4)).astype(np.float32)
    y = ln(mg.Tensor(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data.mean(axis=-1), 0, atol=1e-6)
    np.testing.assert_allclose(y.data.var(axis=-1), 1, atol=1e-3)  # var / (var + eps)
    assert nn.LayerNorm(4).weight.dtype == np.float32
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match=r"LayerNorm: input of shape \(2, 4\) must end in normalized_shape \(3, 4\)"):
        nn.LayerNorm((3, 4))(mg.Tensor(x))


# ----------------------------------------------------------------------------- Sequential, activations, losses
def test_sequential_runs_in_order_and_registers_names(rng):
    model = nn.Sequential(nn.Linear(2, 3, dtype=F64, rng=rng), nn.Tanh(), nn.Linear(3, 1, dtype=F64, rng=rng))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(model) == 3 and isinstance(model[1], nn.Tanh) and len(list(model)) == 3
    x = rng.standard_normal((5, 2))
    h = np.tanh(x @ model[0].weight.data.T + model[0].bias.data)
    np.testing.assert_allclose(model(mg.Tensor(x)).data, h @ model[2].weight.data.T + model[2].bias.data, rtol=1e-12)
    assert repr(model).splitlines()[1] == "  (0): Linear(in_features=2, out_features=3, bias=True)"
    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2, rng=rng), act=nn.ReLU()))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(TypeError, match="Sequential: item '1' must be a Module"):
        nn.Sequential(nn.Tanh(), np.tanh)


def test_activations_match_numpy(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(nn.Tanh()(mg.Tensor(x)).data, np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(nn.Sigmoid()(mg.Tensor(x)).data, 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_array_equal(nn.ReLU()(mg.Tensor(x)).data, np.maximum(x, 0))


def test_cross_entropy_loss_module(rng):
    logits = rng.standard_normal((4, 5))
    target = np.array([0, 3, 1, 3])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    picked = -logp[np.arange(4), target]
    np.testing.assert_allclose(nn.CrossEntropyLoss()(mg.Tensor(logits), target).item(), picked.mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.CrossEntropyLoss(reduction="sum")(mg.Tensor(logits), target).item(), picked.sum())
    ignored = nn.CrossEntropyLoss(ignore_index=3)(mg.Tensor(logits), target)
    np.testing.assert_allclose(ignored.item(), picked[[0, 2]].mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")


def test_mse_loss_module(rng):
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    np.testing.assert_allclose(nn.MSELoss()(mg.Tensor(a), mg.Tensor(b)).item(), ((a - b) ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.MSELoss(reduction="none")(mg.Tensor(a), b).data, (a - b) ** 2, rtol=1e-12)


def test_nn_functional_reexports_minigrad_functional():
    assert nn.functional.cross_entropy is mg.functional.cross_entropy
    assert nn.functional.dropout is mg.functional.dropout


# ----------------------------------------------------------------------------- nn.init
def test_random_inits_fill_in_place_from_rng_and_mark_changed():
    p = nn.Parameter(np.zeros((3, 4), np.float32))
    version = p._changed_at
    assert nn.init.uniform_(p, -2, 3, rng=np.random.default_rng(0)) is p
    assert p._changed_at > version and p.dtype == np.float32
    np.testing.assert_array_equal(p.data, np.random.default_rng(0).uniform(-2, 3, (3, 4)).astype(np.float32))
    nn.init.normal_(p, 1.0, 0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(p.data, np.random.default_rng(1).normal(1.0, 0.5, (3, 4)).astype(np.float32))


def test_constant_inits():
    p = nn.Parameter(np.ones((2, 3)))
    assert nn.init.zeros_(p) is p and np.all(p.data == 0)
    nn.init.ones_(p)
    assert np.all(p.data == 1)
    nn.init.constant_(p, 0.25)
    assert np.all(p.data == 0.25)
    with pytest.raises(TypeError, match="constant_: expected a minigrad Tensor"):
        nn.init.constant_(np.zeros(2), 1.0)


def test_xavier_uniform_bound():
    p = nn.Parameter(np.zeros((4, 6, 2)))  # fan_in 6*2 = 12, fan_out 4*2 = 8
    bound = 2.0 * np.sqrt(6.0 / 20)
    nn.init.xavier_uniform_(p, gain=2.0, rng=np.random.default_rng(2))
    np.testing.assert_allclose(p.data, np.random.default_rng(2).uniform(-bound, bound, (4, 6, 2)), rtol=1e-15)
    with pytest.raises(ValueError, match=r"xavier_uniform_: needs a tensor with at least 2 dimensions; got shape \(3,\)"):
        nn.init.xavier_uniform_(nn.Parameter(np.zeros(3)))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 3, 2)])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape):
    p = nn.Parameter(np.zeros(shape))
    nn.init.orthogonal_(p, gain=1.5, rng=np.random.default_rng(4))
    w = p.data.reshape(shape[0], -1) / 1.5
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-12)
    q = nn.Parameter(np.zeros(shape))
    nn.init.orthogonal_(q, gain=1.5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(p.data, q.data)  # reproducible from the seed


# ----------------------------------------------------------------------------- Module state
def make_mlp(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(2, 3, dtype=dtype, rng=rng), nn.Tanh(), nn.Linear(3, 1, dtype=dtype, rng=rng))


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    a, b = make_mlp(0), make_mlp(1)
    mg.save(a.state_dict(), tmp_path / "model.ckpt")
    assert b.load_state_dict(mg.load(tmp_path / "model.ckpt")) == ([], [])
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        assert q.dtype == np.float32


def test_load_state_dict_names_missing_and_unexpected_keys_and_changes_nothing():
    model = make_mlp(0)
    before = model.state_dict()
    state = make_mlp(1).state_dict()
    del state["2.bias"]
    state["3.weight"] = np.zeros((1, 3))
    with pytest.raises(KeyError, match=r"missing keys \['2.bias'\], unexpected keys \['3.weight'\]"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["2.bias"], ["3.weight"])
    np.testing.assert_array_equal(model[0].weight.data, state["0.weight"])


def test_load_state_dict_shape_mismatch_names_the_key():
    model = make_mlp(0)
    state = model.state_dict()
    state["0.weight"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"size mismatch for 0.weight: checkpoint has shape \(2, 3\), the model has \(3, 2\)"):
        model.load_state_dict(state)


def test_functional_call_swaps_parameters_for_one_call_only(rng):
    lin = nn.Linear(2, 1, bias=False, dtype=F64, rng=rng)
    original = lin.weight
    w = mg.Tensor([[1.0, 2.0]])
    np.testing.assert_allclose(functional_call(lin, {"weight": w}, mg.Tensor([[3.0, 4.0]])).data, [[11.0]])
    assert lin.weight is original and list(lin.parameters()) == [original]
    with pytest.raises(KeyError, match="no parameter named 'bias'"):
        functional_call(lin, {"bias": w}, (mg.Tensor([[3.0, 4.0]]),))


# ----------------------------------------------------------------------------- gradient clipping
def params_with_grads(*grads, dtype=F64):
    params = []
    for g in grads:
        p = nn.Parameter(np.zeros(np.shape(g), dtype))
        p.grad = mg.Tensor(np.asarray(g, dtype))
        params.append(p)
    return params


def test_clip_grad_norm_scales_to_max_norm_and_returns_total():
    params = params_with_grads([3.0, 0.0], [[4.0]], [0.0, 0.0, 0.0])
    params.append(nn.Parameter(np.ones(2)))  # no grad: skipped
    total = clip_grad_norm_(params, max_norm=1.0)
    assert total == pytest.approx(5.0, rel=1e-15) and type(total) is np.float64
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(params[0].grad.data, [3 * scale, 0], rtol=1e-15)
    np.testing.assert_allclose(params[1].grad.data, [[4 * scale]], rtol=1e-15)
    assert params[3].grad is None


def test_clip_grad_norm_leaves_small_gradients_and_other_norms():
    params = params_with_grads([0.3, -0.4])
    assert clip_grad_norm_(params, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(params[0].grad.data, [0.3, -0.4])
    params = params_with_grads([1.0, -3.0], [2.0], dtype=np.float32)
    assert clip_grad_norm_(params, 1.5, norm_type=float("inf")) == pytest.approx(3.0)
    np.testing.assert_allclose(params[0].grad.data, [0.5, -1.5], rtol=1e-6)
    assert params[0].grad.dtype == np.float32
    params = params_with_grads([1.0, -3.0], [2.0])
    assert clip_grad_norm_(params, 100.0, norm_type=1) == pytest.approx(6.0)
    assert clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0) == 0.0
    with pytest.raises(RuntimeError, match="total norm"):
        clip_grad_norm_(params_with_grads([np.inf]), 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="clip_grad_norm_: max_norm must be a number >= 0"):
        clip_grad_norm_(params, -1.0)


def test_clip_grad_value_clamps_elementwise():
    params = params_with_grads([-7.0, 0.5, 6.0], dtype=np.float32)
    clip_grad_value_(params, 5)
    np.testing.assert_array_equal(params[0].grad.data, [-5.0, 0.5, 5.0])
    assert params[0].grad.dtype == np.float32
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value_(params, -1)
