"""Every PyTorch reference case in ../shared/reference/torch_rnn: our cells and layers, loaded with
PyTorch's weights, must give PyTorch's outputs, final states and gradients (x, h0, c0, every
parameter) to 1e-8 in float64, with compiled steps and eagerly."""

import json
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
import minigrad_rnn as mr

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "torch_rnn"
CASES = sorted(p.stem for p in REFERENCE.glob("*.npz")) or ["<none>"]
TOL = 1e-8


def load_case(shared_file, stem):
    """The case's config and arrays (skipped, or failed under MINIGRAD_REQUIRE_SHARED=1, when absent)."""
    path = shared_file(f"reference/torch_rnn/{stem}.npz")
    with np.load(path, allow_pickle=False) as data:
        ref = {key: data[key] for key in data.files}
    return json.loads(str(ref.pop("config"))), ref


def build(config):
    """Our module for a case's config, in float64."""
    kind, module = config["kind"], config["module"]
    I, H, bias = config["input_size"], config["hidden_size"], config["bias"]
    extra = {"nonlinearity": config["nonlinearity"]} if kind == "rnn" else {}
    if module.endswith("Cell"):
        return getattr(mr, module)(I, H, bias, **extra, dtype=np.float64)
    return getattr(mr, module)(I, H, config["num_layers"], bias=bias, batch_first=config["batch_first"],
                               bidirectional=config["bidirectional"], **extra, dtype=np.float64)


def assert_close(got, want, what):
    assert got is not None, f"{what}: no gradient"
    np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL, err_msg=what)


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("stem", CASES)
def test_matches_pytorch(shared_file, stem, compile):  # noqa: A002
    config, ref = load_case(shared_file, stem)
    model = build(config)
    if hasattr(model, "compile"):  # layers: compiled steps (the default) and the eager reference
        model.compile = compile
    params = {k.removeprefix("param."): v for k, v in ref.items() if k.startswith("param.")}
    assert [name for name, _ in model.named_parameters()] == list(params)  # PyTorch's names and order
    model.load_state_dict(params)

    is_lstm, is_cell = config["kind"] == "lstm", config["module"].endswith("Cell")
    x = mg.Tensor(ref["x"], requires_grad=True)
    h0 = mg.Tensor(ref["h0"], requires_grad=True)
    c0 = mg.Tensor(ref["c0"], requires_grad=True) if is_lstm else None
    hx = (h0, c0) if is_lstm else h0
    if is_cell:
        out, state = None, model(x, hx)
    else:
        out, state = model(x, hx, lengths=ref.get("lengths"))
    h_n, c_n = state if is_lstm else (state, None)

    loss = (h_n * ref["g_h_n"]).sum()
    if out is not None:
        assert_close(out.data, ref["out"], "out")
        loss = loss + (out * ref["g_out"]).sum()
    assert_close(h_n.data, ref["h_n"], "h_n")
    if is_lstm:
        assert_close(c_n.data, ref["c_n"], "c_n")
        loss = loss + (c_n * ref["g_c_n"]).sum()
    loss.backward()

    assert_close(x.grad, ref["grad.x"], "grad x")
    assert_close(h0.grad, ref["grad.h0"], "grad h0")
    if is_lstm:
        assert_close(c0.grad, ref["grad.c0"], "grad c0")
    for name, param in model.named_parameters():
        assert_close(param.grad, ref[f"grad.param.{name}"], f"grad {name}")


@pytest.mark.parametrize("stem", ["lstm_bidir_lengths", "gru_2layer_lengths_batchfirst"])
def test_padding_gets_no_gradient_and_zero_output(shared_file, stem):
    config, ref = load_case(shared_file, stem)
    model = build(config)
    model.load_state_dict({k.removeprefix("param."): v for k, v in ref.items() if k.startswith("param.")})
    x = mg.Tensor(ref["x"], requires_grad=True)
    out, _ = model(x, lengths=ref["lengths"])
    (out * ref["g_out"]).sum().backward()
    time_axis = 1 if config["batch_first"] else 0
    positions = np.arange(x.shape[time_axis])
    assert any(length < len(positions) for length in ref["lengths"])  # the case does have padding
    for b, length in enumerate(ref["lengths"]):
        pad = positions >= length
        pad_out = out.data[b][pad] if config["batch_first"] else out.data[pad, b]
        pad_grad = x.grad.data[b][pad] if config["batch_first"] else x.grad.data[pad, b]
        np.testing.assert_array_equal(pad_out, 0)
        np.testing.assert_array_equal(pad_grad, 0)
