"""Attention: the papers' scores, padding excluded exactly (a padded batch equals each sequence alone),
gradients by gradcheck, and errors that name what was expected."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad_rnn.attention import AdditiveAttention, MultiplicativeAttention


def make(kind, Hq=3, Hk=3, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "additive":
        return AdditiveAttention(Hq, Hk, hidden_size=4, dtype=np.float64, rng=rng)
    return MultiplicativeAttention(Hq, Hk, score=kind, dtype=np.float64, rng=rng)


def softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_scores_are_the_papers(kind):
    rng = np.random.default_rng(1)
    T, B = 5, 2
    q, k, v = rng.standard_normal((B, 3)), rng.standard_normal((T, B, 3)), rng.standard_normal((T, B, 2))
    attention = make(kind)
    context, weights = attention(mg.tensor(q), mg.tensor(k), mg.tensor(v))
    if kind == "additive":  # Bahdanau et al. 2015, eq. 6: v . tanh(W q + U k)
        W, U, a = attention.weight_query.numpy(), attention.weight_key.numpy(), attention.v.numpy()
        scores = np.tanh(q @ W.T + k @ U.T) @ a
    elif kind == "general":  # Luong et al. 2015, eq. 8: q W k
        scores = np.einsum("bi,ij,tbj->tb", q, attention.weight.numpy(), k)
    else:
        scores = np.einsum("bi,tbi->tb", q, k)
    expected = softmax(scores, axis=0)
    np.testing.assert_allclose(weights.numpy(), expected.T, rtol=1e-12)
    np.testing.assert_allclose(context.numpy(), np.einsum("tb,tbh->bh", expected, v), rtol=1e-12)
    np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["additive", "general", "dot"]), T=st.integers(1, 6), seed=st.integers(0, 99),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_a_padded_batch_equals_each_sequence_alone(kind, T, seed, lengths):
    lengths = [min(n, T) for n in lengths]
    B, rng = len(lengths), np.random.default_rng(seed)
    q_data, k_data, v_data = rng.standard_normal((B, 3)), rng.standard_normal((T, B, 3)), rng.standard_normal((T, B, 2))
    k_data[np.arange(T)[:, None] >= np.array(lengths)[None]] = 1e3  # padding that would dominate if it leaked
    attention = make(kind)
    q, k, v = (mg.Tensor(a, requires_grad=True) for a in (q_data, k_data, v_data))
    context, weights = attention(q, k, v, lengths=lengths)
    (context * context).sum().backward()
    batch_param_grads = [p.grad.numpy().copy() for p in attention.parameters()]
    alone_param_grads = [np.zeros_like(g) for g in batch_param_grads]
    for b, n in enumerate(lengths):
        assert np.all(weights.numpy()[b, n:] == 0) and np.all(k.grad.numpy()[n:, b] == 0)
        attention.zero_grad()
        qb, kb, vb = (mg.Tensor(a, requires_grad=True)
                      for a in (q_data[b:b + 1], k_data[:n, b:b + 1], v_data[:n, b:b + 1]))
        context_b, weights_b = attention(qb, kb, vb)
        (context_b * context_b).sum().backward()
        np.testing.assert_allclose(context.numpy()[b], context_b.numpy()[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(weights.numpy()[b, :n], weights_b.numpy()[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(q.grad.numpy()[b], qb.grad.numpy()[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(k.grad.numpy()[:n, b], kb.grad.numpy()[:, 0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v.grad.numpy()[:n, b], vb.grad.numpy()[:, 0], rtol=1e-10, atol=1e-12)
        alone_param_grads = [a + p.grad.numpy() for a, p in zip(alone_param_grads, attention.parameters())]
    for g_batch, g_alone in zip(batch_param_grads, alone_param_grads):
        np.testing.assert_allclose(g_batch, g_alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_gradients_and_second_derivatives(kind):
    from minigrad.nn.utils import functional_call
    from minigrad.testing import gradgradcheck

    rng = np.random.default_rng(3)
    attention = make(kind)
    names = [name for name, _ in attention.named_parameters()]

    def fn(q, k, v, *params):
        return functional_call(attention, dict(zip(names, params)), (q, k, v), {"lengths": [4, 2]})

    inputs = [mg.Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3), (4, 2, 3), (4, 2, 2))]
    inputs += [mg.Tensor(p.numpy(), requires_grad=True) for p in attention.parameters()]
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs, fast_mode=True)


def test_errors_name_the_module_and_the_shapes():
    attention = make("additive")
    q, k = mg.tensor(np.ones((2, 3))), mg.tensor(np.ones((4, 2, 3)))
    with pytest.raises(ValueError, match=r"AdditiveAttention: keys must be \(T, B, 3\); got shape \(4, 2, 5\)"):
        attention(q, mg.tensor(np.ones((4, 2, 5))))
    with pytest.raises(ValueError, match=r"AdditiveAttention: query must be \(B, query_size\) = \(2, 3\); got shape \(3,\)"):
        attention(mg.tensor(np.ones(3)), k)
    with pytest.raises(ValueError, match=r"values must be \(T, B, Hv\) with the keys' T and B \(4, 2\); got shape \(3, 2, 2\)"):
        attention(q, k, mg.tensor(np.ones((3, 2, 2))))
    with pytest.raises(ValueError, match=r"every length must be in \[1, 4\] \(the keys have 4 steps\); got \[0, 2\]"):
        attention(q, k, lengths=[0, 2])
    with pytest.raises(ValueError, match="lengths must be 2 integers"):
        attention(q, k, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="'dot' scores need query_size == key_size; got 3 and 4"):
        MultiplicativeAttention(3, 4, score="dot")
    with pytest.raises(ValueError, match="score must be 'general' or 'dot'; got 'concat'"):
        MultiplicativeAttention(3, 3, score="concat")
