"""The sequence driver and the RNN, LSTM and GRU layers built on it.

:func:`run_cell` runs one cell over a sequence; :class:`Recurrent` stacks cells
into layers and directions, with padded batches (``lengths``), dropout between
layers, learnable initial states and per-step states.  ``RNN``, ``LSTM`` and
``GRU`` are :class:`Recurrent` over the built-in cells, with PyTorch's
arguments, parameter names, shapes and results.

Weights move both ways with PyTorch::

    import numpy as np, torch
    import minigrad as mg
    from minigrad_rnn import LSTM

    theirs = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    ours = LSTM(8, 16, num_layers=2, bidirectional=True, dtype=np.float32)

    # PyTorch -> minigrad
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})

    # minigrad -> PyTorch (e.g. after training here)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})

    x = np.random.default_rng(0).standard_normal((5, 3, 8)).astype(np.float32)
    out, (h_n, c_n) = ours(mg.Tensor(x))
    # out.data ~= theirs(torch.from_numpy(x))[0].detach().numpy()
"""
from __future__ import annotations

import warnings

import numpy as np

from minigrad import Tensor, entries, functional as F, ops
from minigrad.modes import no_grad
from minigrad.checkpointing import checkpoint, generator_states, set_generator_states
from minigrad.compiler import donatable, refuse_donated, scan
from minigrad.nn import Module, ModuleList, Parameter
from minigrad.tensor import _rng

from minigrad._checks import check_probability, check_size

from .cells import GRUCell, LSTMCell, RNNCell
from .utils import as_tensor, check_input, check_state, same_structure, tree_leaves, tree_map, tree_unflatten

__all__ = ["run_cell", "Recurrent", "RNN", "LSTM", "GRU"]


# --------------------------------------------------------------------------- one cell over time
def _step_masks(lengths, T: int, B: int, where: str = "run_cell", layout: str = "(T, B, I)"):
    """Per-step (B, 1) bool masks ``t < lengths``, None where every sequence is still running.

    Raises ValueError unless ``lengths`` holds B integers in [1, T].
    """
    if lengths is None:
        return None
    lengths = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1:
        raise ValueError(f"{where}: lengths must be a 1-D sequence of integers; got {lengths!r}")
    if len(lengths) != B:
        raise ValueError(
            f"{where}: lengths has {len(lengths)} entries but the batch has {B} sequences "
            f"(the input is read as {layout})"
        )
    if lengths.min() <= 0:
        raise ValueError(
            f"{where}: every length must be positive (PyTorch packs no empty sequence); got {lengths.tolist()}"
        )
    if lengths.max() > T:
        raise ValueError(
            f"{where}: lengths must not exceed the sequence length T = {T} (input read as {layout}); "
            f"got {lengths.tolist()}"
        )
    valid = np.arange(T)[:, None] < lengths[None, :]
    return [None if row.all() else row[:, None] for row in valid]


def _masked(mask, new: Tensor, old: Tensor) -> Tensor:
    """``new`` where the sequence is running, ``old`` past its end (mask (B, 1) widened to the leaf's rank)."""
    if new.ndim != 2:
        mask = mask.reshape(mask.shape[:1] + (1,) * (new.ndim - 1))
    return ops.where(mask, new, old)


def _run(cell, projected: Tensor, state, masks, reverse: bool, keep_states: bool):
    """The time loop over ``projected`` (T, B, ...), the cell's input projection; returns (outputs list, final state, step states)."""
    T = projected.shape[0]
    outputs, states = [None] * T, [None] * T if keep_states else None
    step = cell.step
    for t in range(T - 1, -1, -1) if reverse else range(T):
        output, new_state = step(projected[t], state)
        if keep_states:
            states[t] = new_state
        mask = None if masks is None else masks[t]
        if mask is None:
            state = new_state
        else:  # past a sequence's end: keep its state, output zeros, pass no gradient to padding
            state = tree_map(lambda new, old: _masked(mask, new, old), new_state, state)
            output = _masked(mask, output, 0)
        outputs[t] = output
    return outputs, state, states


def _project(cell, x: Tensor) -> Tensor:
    return cell.project(x) if hasattr(cell, "project") else x


def _projection(cell, x: Tensor):
    """The cell's projection of ``x``, and whether the compiled loop may write over it
    (:func:`minigrad.scan`'s ``donate_xs``): only memory an op allocated during ``project``, not
    ``x``, a view of it, or a tensor the cell kept from an earlier call."""
    mark = next(entries.ENTRY_INDEX)  # every entry recorded from now on has a larger index
    projected = _project(cell, x)
    leaves = tree_leaves(projected)
    refuse_donated(leaves, f"{type(cell).__name__}.project")
    return projected, all(donatable(leaf, made_after=mark) for leaf in leaves)


def _sequence(cell, x: Tensor, state, masks, reverse: bool, keep_states: bool, compile: bool,  # noqa: A002
              checkpoint_every: int | None = None):
    """The cell over ``x`` (T, B, I): its input projection, then the time loop; returns
    (out (T, B, ...), final state, step states).

    With ``checkpoint_every=k`` the sequence runs in segments of k steps, each under
    :func:`minigrad.checkpoint`: only the state between segments is kept, and backward recomputes
    one segment at a time (memory O(T/k + k) instead of O(T); Chen et al. 2016, Gruslys et al. 2016).
    """
    if checkpoint_every and not keep_states and x.shape[0] > checkpoint_every:
        return (*_checkpointed(cell, x, state, masks, reverse, compile, checkpoint_every), None)
    projected, donate = _projection(cell, x)
    return _time_loop(cell, projected, state, masks, reverse, keep_states, compile, donate)


def _generators(cell) -> list:
    """The random generators ``cell`` may draw from (:meth:`minigrad.nn.Module.generators`); none for a
    cell that is no Module."""
    return getattr(cell, "generators", list)()


def _time_loop(cell, projected: Tensor, state, masks, reverse: bool, keep_states: bool, compile: bool,  # noqa: A002
               donate: bool = False):
    """The time loop over the projected input, compiled (:func:`minigrad.scan`, which may write over
    ``projected`` if ``donate``) or eager.

    Per-step states (``return_states``) come from the eager loop: a compiled loop has no tensor per step
    to hook.  A step that cannot be compiled (it reads values, changes a tensor in place, or draws from
    the cell's generators at every step) runs eagerly, with one warning saying why (:func:`minigrad.scan`).
    """
    if compile and not keep_states:
        steps = tree_leaves(projected)[0].shape[0]  # one step runs eagerly: no generators to look for
        generators = _generators(cell) if steps > 1 else ()
        final, out = scan(lambda carry, x_t: _carry_first(cell.step(x_t, carry)), state, projected,
                          reverse=reverse, masks=masks, donate_xs=donate, generators=generators)
        return out, final, None
    outputs, final, states = _run(cell, projected, state, masks, reverse, keep_states)
    return _stack_outputs(outputs), final, states


def _draws_depend_on_length(cell, x: Tensor, generators) -> bool:
    """Whether ``cell.project`` draws differently for 1 and 2 steps (a mask per step, not per sequence)."""
    if not generators or not hasattr(cell, "project"):
        return False
    start, after = generator_states(generators), []
    with no_grad():
        for steps in (1, 2):
            cell.project(x[:steps])
            after.append(generator_states(generators))
            set_generator_states(generators, start)
    return after[0] != after[1]


def _checkpointed(cell, x, state, masks, reverse, compile, k):  # noqa: A002
    """Segments of k steps, each checkpointed with its own slice of the input projection.

    Each segment projects its own slice of ``x``, so that nothing T-long is kept but ``x`` and the
    output.  The cell's generators are rewound before each segment's ``project`` and resumed after
    it: every segment draws the dropout masks that one ``project`` over the whole sequence draws
    (one per sequence), and ``step`` draws on from where it was.  A cell whose ``project`` draws per
    step has its whole sequence projected once instead (O(T) memory, the same values).
    """
    generators = _generators(cell)
    T = x.shape[0]
    starts = list(range(0, T, k))
    per_segment = not _draws_depend_on_length(cell, x, generators)
    source = x if per_segment else _project(cell, x)
    start = generator_states(generators)
    order = list(reversed(range(len(starts)))) if reverse else list(range(len(starts)))
    outs = [None] * len(starts)
    for n in order:
        a, b = starts[n], min(starts[n] + k, T)

        def segment(part, *leaves, a=a, b=b, first=n == order[0]):
            projected, donate = part, False  # a slice of the one projection, which backward reads again
            if per_segment:
                resume = None if first else generator_states(generators)
                set_generator_states(generators, start)
                projected, donate = _projection(cell, part)
                if resume is not None:
                    set_generator_states(generators, resume)
            out, final, _ = _time_loop(cell, projected, tree_unflatten(state_like, list(leaves)),
                                       None if masks is None else masks[a:b], reverse, False, compile, donate)
            return out, final

        state_like = state  # its nesting (the same for every segment)
        outs[n], state = checkpoint(segment, source[a:b], *tree_leaves(state), generators=generators)
    return ops.concatenate(outs, axis=0), state


def _stack_finals(*finals: Tensor) -> Tensor:
    """The final states of every layer and direction, (layers * directions, B, ...), as PyTorch's h_n.
    One layer's is a view of its state (one op, not a stack's two per state)."""
    return ops.expand_dims(finals[0], 0) if len(finals) == 1 else ops.stack(finals, axis=0)


def _carry_first(step_result):
    output, new_state = step_result
    return new_state, output


def _stack_outputs(outputs) -> Tensor:
    """T tensors (B, ...) -> (T, B, ...) with one concatenate (not T expand_dims + one)."""
    return ops.reshape(ops.concatenate(outputs, axis=0), (len(outputs),) + outputs[0].shape)


def run_cell(cell, x, state=None, lengths=None, reverse: bool = False, return_states: bool = False, *,
             compile: bool = True, checkpoint_every: int | None = None):  # noqa: A002 - the issue's (and torch's) name
    """Run ``cell`` over a time-major sequence: backpropagation through time is ordinary reverse mode.

    Args:
        cell: any module following the cell protocol (see :mod:`minigrad_rnn.cells`).
        x: (T, B, I) Tensor or array.
        state: the cell's state for B sequences (``cell.initial_state(B)`` if None).
        lengths: None, or B ints in [1, T]: sequence b is ``x[:lengths[b], b]``; later outputs
            are 0, its final state is the one after its last valid step, and padding gets no
            gradient (as PyTorch runs ``pack_padded_sequence(..., enforce_sorted=False)``).
        reverse: run t = T-1 .. 0; with ``lengths`` each sequence then starts at its own last
            valid element, because its state stays at the initial one until t < length.
        return_states: also return the T states the cell produced, in time order (position t
            for either direction), as the graph's own tensors: ``retain_grad()`` or a hook on
            one gives dL/d(state_t).  Past a sequence's length they hold what the cell computed
            on padding, and get zero gradient.
        compile: run the step as a compiled program (:func:`minigrad.scan`: traced once per
            call, one tape entry for the loop); False runs every op eagerly, the reference
            semantics. Both give the same outputs and gradients.
        checkpoint_every: keep the state every k steps only and recompute each segment of k steps
            in backward (:func:`minigrad.checkpoint`): memory O(T/k + k) instead of O(T), for the
            cost of running the forward twice; the same gradients.

    Returns:
        ``(out, final_state)`` or ``(out, final_state, states)``; out (T, B, output_size).

    Raises:
        ValueError: x not 3-D, or bad ``lengths`` (see :class:`Recurrent`).
    """
    x = as_tensor(x, "run_cell")
    if x.ndim != 3:
        raise ValueError(f"run_cell: expected a time-major input (T, B, I); got shape {x.shape}")
    T, B = x.shape[:2]
    if T == 0:
        raise ValueError(f"run_cell: the input (T, B, I) has 0 time steps; expected at least 1 (got shape {x.shape})")
    masks = _step_masks(lengths, T, B)
    if state is None:
        state = cell.initial_state(B)
    out, final, states = _sequence(cell, x, state, masks, reverse, return_states, compile, checkpoint_every)
    return (out, final, states) if return_states else (out, final)


# --------------------------------------------------------------------------- layers of cells
class Recurrent(Module):
    """One sequence driver for any cells: layers, directions, padded batches, dropout.

    Args:
        cells: the cells, layer-major and direction-minor (PyTorch's order of ``h_n``):
            ``[l0, l0_reverse, l1, l1_reverse, ...]`` when bidirectional.  Each follows the
            cell protocol (:mod:`minigrad_rnn.cells`); layer k > 0 must take
            ``num_directions * output_size`` input features, and every cell's state must have
            the same shapes so that final states stack.
        bidirectional: run every second cell backwards in time; outputs are concatenated
            ``[forward, reverse]`` on the feature axis.
        batch_first: input and output are (B, T, F) instead of (T, B, F); states are not affected.
        dropout: dropout on the outputs of every layer but the last, in training mode only,
            drawn from ``rng`` (as PyTorch's ``dropout``).
        learn_initial_state: register the initial state as parameters ``initial_state`` (one
            leaf) or ``initial_state_0, initial_state_1, ...`` (an LSTM's h and c), each shaped
            (num_layers * num_directions, ...) and shared by the batch, starting at zero. Used
            when ``hx`` is None.  (PyTorch has no such option: those keys are extra there.)
        rng: ``numpy.random.Generator`` for dropout.
        compile: run each cell's steps as a compiled program (see :func:`run_cell`); the
            attribute ``compile`` may be changed later.  False: every op eagerly.
        checkpoint_every: gradient checkpointing per layer every k steps (see :func:`run_cell`);
            the attribute may be changed later.

    Parameters are exposed under PyTorch's flat names, as direct attributes: each parameter
    ``name`` of the cell of layer k is ``{name}_l{k}``, or ``{name}_l{k}_reverse`` for the
    reverse direction (dots of nested names become "_").  So ``named_parameters()`` and
    ``state_dict()`` of RNN/LSTM/GRU have exactly PyTorch's keys, in PyTorch's order.

    Call: ``out, h_n = layer(input, hx=None, lengths=None, return_states=False)``:
        input: (T, B, I), (B, T, I) if batch_first, or unbatched (T, I).
        hx (also accepted as ``h0=``): the initial state nested as a cell's, each leaf (L*D, B, ...)
            (unbatched: (L*D, ...)); an LSTM's is ``(h_0, c_0)``.  Zeros (or the learned state) if None.
        lengths: B ints in [1, T], for a right-padded batch (see :func:`run_cell`).
        return_states: also return ``states[k][t]``, the state cell k (layer-major,
            direction-minor) produced at position t, as graph tensors with the batch axis
            (even for unbatched input), for ``retain_grad`` or hooks (dL/dh_t).
    Returns ``(out, h_n)`` or ``(out, h_n, states)``; out (T, B, D*O) (batch_first: (B, T, D*O),
    unbatched: (T, D*O)), ``h_n`` nested as hx.

    Raises:
        ValueError: a bad configuration (constructor); at call, input not 2-D or 3-D, a wrong
            feature size or dtype, a state of the wrong nesting/size/dtype, bad lengths. The
            messages name the expected and given shapes, as PyTorch's do.
    """

    def __init__(self, cells, *, bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 learn_initial_state: bool = False, rng=None, compile: bool = True,  # noqa: A002
                 checkpoint_every: int | None = None):
        super().__init__()
        name = type(self).__name__
        cells = list(cells)
        D = 2 if bidirectional else 1
        if not cells or len(cells) % D or not all(isinstance(c, Module) for c in cells):
            raise ValueError(f"{name}: cells must be a non-empty list of Modules, {D} per layer; got {len(cells)}")
        check_probability(dropout, "dropout", name)
        if dropout > 0 and len(cells) == D:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
                          stacklevel=2)
        for k in range(D, len(cells)):
            below = cells[k - D - k % D]
            want = D * getattr(below, "output_size", getattr(below, "hidden_size", 0))
            got = getattr(cells[k], "input_size", want)
            if got != want:
                raise ValueError(f"{name}: the cell of layer {k // D} takes {got} input features, but the layer "
                                 f"below gives {want} (num_directions * its output_size)")
        template = cells[0].initial_state(1)
        for k, cell in enumerate(cells):
            other = cell.initial_state(1)
            if not same_structure(template, other) or [t.shape for t in tree_leaves(template)] != [
                    t.shape for t in tree_leaves(other)]:
                raise ValueError(f"{name}: every cell's state must have the same nesting and shapes (to stack "
                                 f"h_n); cell 0 and cell {k} differ")

        self.num_layers, self.bidirectional, self.batch_first = len(cells) // D, bool(bidirectional), bool(batch_first)
        self.dropout = float(dropout)
        self.compile = bool(compile)
        if checkpoint_every is not None:
            check_size(checkpoint_every, "checkpoint_every", name)
        self.checkpoint_every = checkpoint_every
        self.rng = _rng(rng)
        self._aliases = {}  # PyTorch-style name -> (module that owns the parameter, its attribute there)
        for k, cell in enumerate(cells):
            suffix = f"_l{k // D}" + ("_reverse" if k % D else "")
            for module_name, module in cell.named_modules():
                for param_name, param in module._parameters.items():
                    alias = (f"{module_name}_{param_name}" if module_name else param_name).replace(".", "_") + suffix
                    self._aliases[alias] = (module, param_name)
                    setattr(self, alias, param)
        self._initial_state_names = []
        if learn_initial_state:
            leaves = tree_leaves(template)
            for i, leaf in enumerate(leaves):
                param_name = "initial_state" if len(leaves) == 1 else f"initial_state_{i}"
                setattr(self, param_name, Parameter(np.zeros((len(cells),) + leaf.shape[1:], leaf.dtype)))
                self._initial_state_names.append(param_name)
        # registered after the aliases: named_parameters() yields each parameter once, under its alias
        self.cells = ModuleList(cells)
        first = cells[0]
        self.input_size = getattr(first, "input_size", None)
        self.dtype = getattr(first, "dtype", None)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        module, attr = self.__dict__.get("_aliases", {}).get(name, (None, None))
        if module is not None and isinstance(value, Parameter) and module.__dict__.get(attr) is not value:
            setattr(module, attr, value)  # a new parameter under a PyTorch name: the cell uses it too

    def _bind_parameters(self):
        """Let the cells use what the aliases hold now (e.g. tensors swapped in by ``functional_call``)."""
        for alias, (module, attr) in self._aliases.items():
            value = self.__dict__[alias]
            if module.__dict__.get(attr) is not value:
                object.__setattr__(module, attr, value)

    def _initial_state(self, batch_size: int):
        """Per cell: its zero state, or the learned one broadcast over the batch."""
        if not self._initial_state_names:
            return [cell.initial_state(batch_size) for cell in self.cells]
        template = self.cells[0].initial_state(1)
        learned = [getattr(self, n) for n in self._initial_state_names]
        return [tree_unflatten(template, [ops.broadcast_to(p[k], (batch_size,) + p.shape[1:]) for p in learned])
                for k in range(len(self.cells))]

    def forward(self, input, hx=None, lengths=None, return_states: bool = False, *, h0=None):  # noqa: A002
        name = type(self).__name__
        if h0 is not None:  # the name for the state; PyTorch's is hx
            if hx is not None:
                raise TypeError(f"{name}: pass the initial state as hx or as h0, not both")
            hx = h0
        x = as_tensor(input, name)
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.ndim}D instead")
        check_input(name, x, self.input_size, self.dtype)
        batched = x.ndim == 3
        layout = ("(B, T, I) since batch_first=True" if self.batch_first else "(T, B, I) since batch_first=False") \
            if batched else "(T, I), unbatched"
        if not batched:
            x = ops.expand_dims(x, 1)
        elif self.batch_first:
            x = ops.swapaxes(x, 0, 1)
        if x.shape[0] == 0:
            raise ValueError(f"{name}: the input {layout.split(' since')[0]} has 0 time steps; expected at least 1 "
                             f"(got shape {tuple(input.shape)})")
        T, B = x.shape[:2]
        masks = _step_masks(lengths, T, B, name, layout)
        self._bind_parameters()
        cells, D = list(self.cells), 2 if self.bidirectional else 1

        if hx is None:
            states = self._initial_state(B)
        else:
            zero = tree_map(lambda t: Tensor._from_array(np.zeros((len(cells),) + t.shape, t.dtype)),
                            cells[0].initial_state(B))
            hint = f" (the input {tuple(input.shape)} is read as {layout})"
            hx = check_state(name, hx, zero, batched, batch_axis=1, name="hidden", hint=hint)
            states = [tree_map(lambda t, k=k: t[k], hx) for k in range(len(cells))]

        finals, all_states = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True, self.rng)
            outs = []
            for direction in range(D):
                k = layer * D + direction
                cell = cells[k]
                out, final, steps = _sequence(cell, x, states[k], masks, direction == 1, return_states,
                                              self.compile, self.checkpoint_every)
                outs.append(out)
                finals.append(final)
                all_states.append(steps)
            x = outs[0] if D == 1 else ops.concatenate(outs, axis=-1)

        h_n = tree_map(_stack_finals, *finals)
        if not batched:
            x = ops.squeeze(x, 1)
            h_n = tree_map(lambda t: ops.squeeze(t, 1), h_n)
        elif self.batch_first:
            x = ops.swapaxes(x, 0, 1)
        return (x, h_n, all_states) if return_states else (x, h_n)

    def extra_repr(self) -> str:
        s = f"num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


# --------------------------------------------------------------------------- PyTorch's layers
def _cells(make_cell, input_size: int, output_size: int, num_layers, bidirectional, where: str):
    """Cells layer-major, direction-minor; layer k > 0 reads both directions of layer k - 1."""
    check_size(num_layers, "num_layers", where)
    D = 2 if bidirectional else 1
    return [make_cell(input_size if layer == 0 else D * output_size)
            for layer in range(num_layers) for _ in range(D)]


class _PyTorchLayer(Recurrent):
    """PyTorch's argument checks and repr shared by RNN, LSTM and GRU."""

    def __init__(self, cells, hidden_size, bias, batch_first, dropout, bidirectional, learn_initial_state, rng,
                 compile, checkpoint_every):  # noqa: A002
        for flag, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{type(self).__name__}: {flag} should be of type bool, got: {type(value).__name__}")
        super().__init__(cells, bidirectional=bidirectional, batch_first=batch_first, dropout=dropout,
                         learn_initial_state=learn_initial_state, rng=rng, compile=compile,
                         checkpoint_every=checkpoint_every)
        self.hidden_size, self.bias = hidden_size, bias

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if getattr(self, "proj_size", 0):
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity='{self.nonlinearity}'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def __repr__(self):  # PyTorch's one-line form; the cells are an implementation detail here
        return f"{type(self).__name__}({self.extra_repr()})"


_LAYER_ARGS = """
    Args shared by RNN, LSTM and GRU (PyTorch's, in PyTorch's order):
        input_size, hidden_size: I and H.  num_layers: stacked layers L.
        bias: whether cells have ``bias_ih``/``bias_hh``.
        batch_first: input and output (B, T, F) rather than (T, B, F) (states are unaffected).
        dropout: dropout on each layer's output but the last, training mode only.
        bidirectional: D = 2 directions, outputs concatenated [forward, reverse].
    Keyword-only, beyond PyTorch:
        dtype: parameter dtype (float32 by default); the input must have the same.
        rng: ``numpy.random.Generator`` for the init U(-1/sqrt(H), 1/sqrt(H)) and all dropout.
        input_dropout, recurrent_dropout: variational dropout (Gal & Ghahramani 2016): one mask
            per sequence, the same at every step, on each layer's input x and on h as the
            recurrence reads it; training mode only.
        learn_initial_state: learn h_0 (and c_0), see :class:`Recurrent`.
        compile: compiled steps (default) or every op eagerly; the same results (:func:`run_cell`).
        checkpoint_every: recompute each segment of k steps in backward (:func:`run_cell`).
    Raises:
        ValueError (TypeError for a non-int size or non-bool flag): a bad configuration, with
        PyTorch's messages. At call: see :class:`Recurrent`.
"""


class RNN(_PyTorchLayer):
    """Elman RNN layers, as ``torch.nn.RNN``: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),
    act = tanh or relu (``nonlinearity="tanh"`` or ``"relu"``).

    Parameters ``weight_ih_l{k}`` (H, I or D*H), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (H,), and ``..._reverse``.  Call: ``out, h_n = rnn(x, hx=None, lengths=None)``;
    out (T, B, D*H), h_n (L*D, B, H); see :class:`Recurrent` for layouts, ``lengths`` and errors.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype=np.float32, rng=None, input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 learn_initial_state: bool = False, compile: bool = True,  # noqa: A002
                 checkpoint_every: int | None = None):
        rng = _rng(rng)
        cells = _cells(lambda n: RNNCell(n, hidden_size, bias, nonlinearity, dtype=dtype, rng=rng,
                                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout),
                       input_size, hidden_size, num_layers, bidirectional, "RNN")
        super().__init__(cells, hidden_size, bias, batch_first, dropout, bidirectional, learn_initial_state, rng,
                         compile, checkpoint_every)
        self.nonlinearity = nonlinearity


class LSTM(_PyTorchLayer):
    """LSTM layers, as ``torch.nn.LSTM`` (equations: :class:`LSTMCell`; gate order i, f, g, o).
    ``proj_size`` > 0 gives an LSTM with projections (Sak et al. 2014): h_t has size P = proj_size.

    Parameters ``weight_ih_l{k}`` (4H, I or D*P), ``weight_hh_l{k}`` (4H, P), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (P, H) if proj_size, and ``..._reverse``; P = proj_size or H.
    Call: ``out, (h_n, c_n) = lstm(x, hx=None, lengths=None)`` with hx = (h_0, c_0);
    out (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H); see :class:`Recurrent`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, *,
                 dtype=np.float32, rng=None, input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 learn_initial_state: bool = False, compile: bool = True,  # noqa: A002
                 checkpoint_every: int | None = None):
        rng = _rng(rng)
        cells = _cells(lambda n: LSTMCell(n, hidden_size, bias, proj_size=proj_size, dtype=dtype, rng=rng,
                                          input_dropout=input_dropout, recurrent_dropout=recurrent_dropout),
                       input_size, proj_size or hidden_size, num_layers, bidirectional, "LSTM")
        super().__init__(cells, hidden_size, bias, batch_first, dropout, bidirectional, learn_initial_state, rng,
                         compile, checkpoint_every)
        self.proj_size = proj_size


class GRU(_PyTorchLayer):
    """GRU layers, as ``torch.nn.GRU`` (equations: :class:`GRUCell`; gate order r, z, n).

    Parameters ``weight_ih_l{k}`` (3H, I or D*H), ``weight_hh_l{k}`` (3H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (3H,), and ``..._reverse``.  Call: ``out, h_n = gru(x, hx=None, lengths=None)``;
    out (T, B, D*H), h_n (L*D, B, H); see :class:`Recurrent`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype=np.float32, rng=None, input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 learn_initial_state: bool = False, compile: bool = True,  # noqa: A002
                 checkpoint_every: int | None = None):
        rng = _rng(rng)
        cells = _cells(lambda n: GRUCell(n, hidden_size, bias, dtype=dtype, rng=rng,
                                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout),
                       input_size, hidden_size, num_layers, bidirectional, "GRU")
        super().__init__(cells, hidden_size, bias, batch_first, dropout, bidirectional, learn_initial_state, rng,
                         compile, checkpoint_every)


for _layer in (RNN, LSTM, GRU):
    _layer.__doc__ += _LAYER_ARGS
