"""Against live PyTorch (skipped without it): what the shared reference files do not cover --
LSTM projections (proj_size), and weights moving both ways through state_dict."""

import numpy as np
import pytest

import minigrad as mg
from minigrad.optim import SGD
from minigrad_rnn import GRU, LSTM

torch = pytest.importorskip("torch")


def test_projected_bidirectional_lstm_with_lengths_matches_pytorch():
    T, B, I, H, P = 5, 3, 4, 6, 3
    rng = np.random.default_rng(0)
    theirs = torch.nn.LSTM(I, H, 2, bidirectional=True, proj_size=P, dtype=torch.float64)
    ours = LSTM(I, H, 2, bidirectional=True, proj_size=P, dtype=np.float64, rng=rng)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})

    x, h0, c0 = rng.standard_normal((T, B, I)), rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))
    lengths = [5, 2, 4]
    g_out, g_h, g_c = rng.standard_normal((T, B, 2 * P)), rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))

    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, lengths, enforce_sorted=False)
    tout, (th, tc) = theirs(packed, (th0, tc0))
    tout = torch.nn.utils.rnn.pad_packed_sequence(tout, total_length=T)[0]
    ((tout * torch.tensor(g_out)).sum() + (th * torch.tensor(g_h)).sum() + (tc * torch.tensor(g_c)).sum()).backward()

    mx, mh0, mc0 = (mg.Tensor(a, requires_grad=True) for a in (x, h0, c0))
    out, (h_n, c_n) = ours(mx, (mh0, mc0), lengths=lengths)
    ((out * g_out).sum() + (h_n * g_h).sum() + (c_n * g_c).sum()).backward()

    pairs = [(out, tout), (h_n, th), (c_n, tc), (mx.grad, tx.grad), (mh0.grad, th0.grad), (mc0.grad, tc0.grad)]
    pairs += [(p.grad, dict(theirs.named_parameters())[name].grad) for name, p in ours.named_parameters()]
    for got, want in pairs:
        np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-9, atol=1e-10)


def test_weights_trained_here_load_into_pytorch_and_back():
    rng = np.random.default_rng(1)
    ours = GRU(3, 5, 2, batch_first=True, bidirectional=True, rng=rng)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    opt = SGD(ours.parameters(), lr=0.5)
    for _ in range(3):  # move away from the initialization
        opt.zero_grad()
        out, _ = ours(x)
        (out * out).sum().backward()
        opt.step()

    theirs = torch.nn.GRU(3, 5, 2, batch_first=True, bidirectional=True)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    out, h_n = ours(x)
    tout, th = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n.data, th.detach().numpy(), rtol=1e-5, atol=1e-6)

    back = GRU(3, 5, 2, batch_first=True, bidirectional=True, rng=np.random.default_rng(2))
    back.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(back(x)[0].data, out.data)


def test_weights_move_through_safetensors_files_both_ways(tmp_path):
    """The README's recipe: ``mg.save(state_dict)`` -> ``safetensors.torch.load_file``, and back."""
    from safetensors.torch import load_file, save_file

    ours = LSTM(3, 4, 2, bidirectional=True, rng=np.random.default_rng(3))
    x = np.random.default_rng(4).standard_normal((5, 2, 3)).astype(np.float32)
    mg.save(ours.state_dict(), tmp_path / "lstm.safetensors")
    theirs = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    theirs.load_state_dict(load_file(tmp_path / "lstm.safetensors"))
    np.testing.assert_allclose(ours(x)[0].data, theirs(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-5,
                               atol=1e-6)

    with torch.no_grad():
        for p in theirs.parameters():
            p.mul_(-0.5)
    save_file(theirs.state_dict(), tmp_path / "theirs.safetensors")
    back = LSTM(3, 4, 2, bidirectional=True, rng=np.random.default_rng(5))
    back.load_state_dict(mg.load(tmp_path / "theirs.safetensors"))
    np.testing.assert_allclose(back(x)[0].data, theirs(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-5,
                               atol=1e-6)
