"""A property-test kit for recurrent cells: Hypothesis strategies and ``check_cell(make_cell)``.

One line checks a cell of your own against the bugs recurrent code has had (pytorch/pytorch#3662,
#517: padded batches and reversed directions that read the padding)::

    from minigrad_rnn.testing import check_cell
    check_cell(lambda rng: MyCell(3, 4, dtype=np.float64, rng=rng))

It runs the cell through :func:`minigrad_rnn.run_cell`, so it lives here, above the core;
``minigrad.testing.recurrent`` is the same module under its old name.  It needs Hypothesis.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import minigrad as mg
from minigrad.compiler import flatten
from minigrad.nn.utils import functional_call

from minigrad.testing import gradcheck, gradgradcheck

from .cells import GRUCell, LSTMCell, RNNCell
from .layers import run_cell

__all__ = ["check_cell", "padded_batches", "cell_sizes", "layer_configs", "nested_states"]


def cell_sizes(max_input=4, max_hidden=5):
    """(input_size, hidden_size) pairs of small sizes."""
    return st.tuples(st.integers(1, max_input), st.integers(1, max_hidden))


def layer_configs(max_layers=2):
    """Keyword arguments of a layer (``RNN``, ``LSTM``, ``GRU``, ``Recurrent``): ``num_layers`` in
    [1, max_layers], ``bidirectional`` and ``batch_first``."""
    return st.fixed_dictionaries({"num_layers": st.integers(1, max_layers), "bidirectional": st.booleans(),
                                  "batch_first": st.booleans()})


def nested_states(batch_size: int, hidden_size: int, dtype=np.float64, max_leaves=4):
    """A recurrent state as the driver takes one: a (batch_size, hidden_size) Tensor, or tuples,
    lists and dicts of states, nested (at most ``max_leaves`` Tensors; values in [-1, 1])."""
    def leaf(seed):
        return mg.Tensor(np.random.default_rng(seed).uniform(-1, 1, (batch_size, hidden_size)).astype(dtype))

    return st.recursive(
        st.builds(leaf, st.integers(0, 2**32 - 1)),
        lambda children: st.one_of(st.tuples(children, children), st.lists(children, min_size=1, max_size=3),
                                   st.dictionaries(st.sampled_from(["h", "c", "memory"]), children, min_size=1)),
        max_leaves=max_leaves)


@st.composite
def padded_batches(draw, input_size: int, max_steps=6, max_batch=4, batch_first=None, dtype=np.float64):
    """``(x, lengths, batch_first)``: a right-padded batch (T, B, I), or (B, T, I) if ``batch_first``
    (drawn when None), and B lengths in [1, T] (at least one full-length sequence)."""
    T, B = draw(st.integers(1, max_steps)), draw(st.integers(1, max_batch))
    first = draw(st.booleans()) if batch_first is None else batch_first
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    lengths[draw(st.integers(0, B - 1))] = T
    values = draw(st.lists(st.floats(-2, 2, allow_nan=False, width=64), min_size=T * B * input_size,
                           max_size=T * B * input_size))
    x = np.array(values, dtype=dtype).reshape(T, B, input_size)
    return (x.transpose(1, 0, 2).copy() if first else x), lengths, first


def _run(cell, x, lengths=None, reverse=False, compile=True):  # noqa: A002

    out, state = run_cell(cell, x, lengths=lengths, reverse=reverse, compile=compile)
    return out, flatten(state)[0]


def _close(a, b, what, tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol, err_msg=f"check_cell: {what}")


def check_cell(make_cell, T=5, lengths=(5, 3, 1), seed=0, tol=1e-10, fast_mode=False):
    """Run the property checks on the cell ``make_cell(rng)`` builds (float64, small sizes advised).

    1. A padded batch run with ``lengths`` equals each sequence run alone: outputs up to its
       length (zeros past it), final states, and the gradients of the input and every parameter.
    2. The same for ``reverse=True``: each sequence starts at its own last element.
    3. ``gradcheck`` and ``gradgradcheck`` pass with respect to the input and every parameter,
       through :func:`minigrad.nn.utils.functional_call` (``fast_mode=True``: one random
       direction per input, PyTorch's fast mode, instead of every element).
    4. Compiled equals eager (outputs, states, gradients).
    5. ``state_dict`` round-trips through ``minigrad.save``/``load`` into a fresh cell.
    6. If torch is installed and the cell is a built-in with a torch counterpart
       (``torch.nn.RNNCell``, ``LSTMCell``, ``GRUCell``), its outputs and gradients match torch's.

    Returns True; raises AssertionError (or :class:`GradcheckError`) naming the failed check.
    """
    import os
    import tempfile

    rng = np.random.default_rng(seed)
    cell = make_cell(np.random.default_rng(seed))
    I, B = cell.input_size, len(lengths)
    x_data = rng.standard_normal((T, B, I))
    names = [name for name, _ in cell.named_parameters()]

    for reverse in (False, True):
        what = "reverse " if reverse else ""
        cell.zero_grad()
        x = mg.Tensor(x_data, requires_grad=True)
        out, state = _run(cell, x, list(lengths), reverse)
        (mg.sum(out * out) + sum(mg.sum(s * s) for s in state)).backward()
        batch_grads = [p.grad.data.copy() if p.grad is not None else 0 for p in cell.parameters()]
        alone_grads = [0] * len(batch_grads)
        for b, n in enumerate(lengths):
            cell.zero_grad()
            xb = mg.Tensor(x_data[:n, b:b + 1], requires_grad=True)
            out_b, state_b = _run(cell, xb, None, reverse)
            (mg.sum(out_b * out_b) + sum(mg.sum(s * s) for s in state_b)).backward()
            _close(out.data[:n, b:b + 1], out_b.data, f"{what}output of sequence {b} (length {n}) in the batch "
                   "differs from the sequence run alone", tol)
            if n < T:
                _close(out.data[n:, b], 0, f"{what}output past the length of sequence {b} is not zero", tol)
            for s, s_b in zip(state, state_b):
                _close(s.data[b:b + 1], s_b.data, f"{what}final state of sequence {b} differs from it run alone", tol)
            _close(x.grad.data[:n, b:b + 1], xb.grad.data, f"{what}input gradient of sequence {b} differs", tol)
            alone_grads = [a + (p.grad.data if p.grad is not None else 0) for a, p in zip(alone_grads, cell.parameters())]
        for name, g_batch, g_alone in zip(names, batch_grads, alone_grads):
            _close(g_batch, g_alone, f"{what}gradient of {name}: the padded batch's differs from the sum over "
                   "sequences run alone", tol)

    small = mg.Tensor(x_data[:3, :2], requires_grad=True)
    params = [mg.Tensor(p.data.astype(np.float64), requires_grad=True) for p in cell.parameters()]

    def through(x, *values):
        out, state = _run_functional(cell, dict(zip(names, values)), x)
        return (out, *state)

    gradcheck(through, [small, *params], fast_mode=fast_mode)
    gradgradcheck(through, [small, *params], fast_mode=fast_mode)

    results = []
    for compile in (True, False):  # noqa: A001
        cell.zero_grad()
        x = mg.Tensor(x_data, requires_grad=True)
        out, state = _run(cell, x, list(lengths), False, compile)
        (mg.sum(out * out) + sum(mg.sum(s * s) for s in state)).backward()
        results.append([out.data, *[s.data for s in state], x.grad.data,
                        *[p.grad.data for p in cell.parameters() if p.grad is not None]])
    for k, (a, b) in enumerate(zip(*results)):
        _close(a, b, f"compiled and eager differ in result {k}", tol)

    fresh = make_cell(np.random.default_rng(seed + 1))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cell.safetensors")
        mg.save(cell.state_dict(), path)
        fresh.load_state_dict(mg.load(path))
    x = mg.Tensor(x_data)
    _close(_run(fresh, x)[0].data, _run(cell, x)[0].data, "a cell loaded from the saved state_dict computes "
           "other outputs", 0)
    _check_against_torch(cell, x_data, tol)
    return True


def _check_against_torch(cell, x_data, tol):
    """Outputs and parameter gradients of a built-in cell against its torch counterpart, step by step."""
    try:
        import torch
    except ImportError:
        return

    kind = next((c for c in (LSTMCell, GRUCell, RNNCell) if type(cell) is c), None)
    if kind is None or getattr(cell, "proj_size", 0):
        return
    extra = {"nonlinearity": cell.nonlinearity} if kind is RNNCell else {}
    theirs = getattr(torch.nn, kind.__name__)(cell.input_size, cell.hidden_size, bias=cell.bias, dtype=torch.float64,
                                              **extra)
    theirs.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in cell.state_dict().items()})
    outs, state = [], None
    for x_t in torch.from_numpy(x_data):
        state = theirs(x_t, state)
        outs.append(state[0] if kind is LSTMCell else state)
    torch.stack(outs).pow(2).sum().backward()
    cell.zero_grad()
    out, _ = _run(cell, mg.Tensor(x_data))
    mg.sum(out * out).backward()
    _close(out.data, torch.stack(outs).detach().numpy(), f"outputs differ from torch.nn.{kind.__name__}'s", tol)
    for name, p in cell.named_parameters():
        _close(p.grad.data, dict(theirs.named_parameters())[name].grad.numpy(),
               f"gradient of {name} differs from torch.nn.{kind.__name__}'s", tol)


def _run_functional(cell, parameters, x):

    def run(x):
        out, state = run_cell(cell, x)
        return out, flatten(state)[0]

    class _Call(mg.nn.Module):  # functional_call needs a module whose forward runs the cell
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            return run(x)

    wrapper = _Call()
    return functional_call(wrapper, {f"cell.{k}": v for k, v in parameters.items()}, (x,))
