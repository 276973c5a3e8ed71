"""The encoder-decoder: compiled equals eager, a padded batch equals each sequence alone, gradients,
greedy and beam search, and that it learns to write digit strings backwards."""
import numpy as np
import pytest

import minigrad as mg
from minigrad.functional import cross_entropy, log_softmax
from minigrad.testing import gradcheck
from minigrad_rnn import run_cell
from minigrad_rnn.app.translate import BOS, EOS, PAD, VOCAB, ReversalTask, TranslateRun, exact_match
from minigrad_rnn.seq2seq import Seq2Seq

STRINGS = [np.array([3, 1, 4, 1, 5]), np.array([9, 2]), np.array([6, 5, 3])]


def model(attention, dtype=np.float64, seed=0):
    return Seq2Seq(VOCAB, VOCAB, 4, 5, attention, dtype=dtype, rng=np.random.default_rng(seed))


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the attentive step compiles: no fallback to eager
@pytest.mark.parametrize("attention", ["additive", "general", None])  # "dot" needs H == 2H
def test_the_compiled_decoder_equals_the_eager_one(attention):
    source, lengths, target_in, target_out = ReversalTask.encode(STRINGS)
    results = []
    for compile in (True, False):  # noqa: A001
        m = model(attention)
        state = m.encode(source, lengths)
        out, _ = run_cell(m.decoder, m.target_embed(target_in), state, compile=compile)
        loss = cross_entropy(m.head(out), target_out, ignore_index=PAD)
        loss.backward()
        results.append([loss.data] + [p.grad.data for p in m.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("attention", ["additive", None])
def test_a_padded_batch_equals_each_sequence_alone(attention):
    m = model(attention)
    source, lengths, target_in, _ = ReversalTask.encode(STRINGS)
    logits = m(source, lengths, target_in).numpy()
    for b, digits in enumerate(STRINGS):
        s, n, t_in, _ = ReversalTask.encode([digits])
        alone = m(s, n, t_in).numpy()
        np.testing.assert_allclose(logits[:len(digits) + 1, b], alone[:, 0], rtol=1e-11, atol=1e-13)


def test_gradients_of_the_whole_model():
    from minigrad.nn.utils import functional_call

    m = model("additive")
    names = [name for name, _ in m.named_parameters()]
    source, lengths, target_in, target_out = ReversalTask.encode(STRINGS[1:])

    def loss(*params):
        logits = functional_call(m, dict(zip(names, params)), (source, lengths, target_in))
        return cross_entropy(logits, target_out, ignore_index=PAD)

    assert gradcheck(loss, [mg.Tensor(p.numpy(), requires_grad=True) for p in m.parameters()], fast_mode=True)


def _log_probability(m, digits, output):
    """log p(output + EOS | digits) under teacher forcing."""
    source, lengths, _, _ = ReversalTask.encode([digits])
    target = list(output) + [EOS]
    target_in = np.array([BOS] + list(output))[:, None]
    with mg.no_grad():
        log_p = log_softmax(m(source, lengths, target_in), axis=-1).numpy()[:, 0]
    return float(sum(log_p[k, token] for k, token in enumerate(target)))


def test_beam_search_finds_at_least_what_greedy_finds():
    m = model("additive", seed=3)
    source, lengths, _, _ = ReversalTask.encode(STRINGS)
    greedy, weights = m.greedy(source, lengths, BOS, EOS, 8)
    for b, digits in enumerate(STRINGS):
        s = source[:lengths[b], b:b + 1]
        one, one_score = m.beam_search(s, int(lengths[b]), BOS, EOS, 8, beam_width=1)
        assert one == greedy[b]
        if len(one) < 8:  # finished: its score is the model's log-probability of it
            assert one_score == pytest.approx(_log_probability(m, digits, one), abs=1e-9)
        best, best_score = m.beam_search(s, int(lengths[b]), BOS, EOS, 8, beam_width=4)
        assert best_score >= one_score - 1e-12
        assert weights[b] is None or np.allclose(weights[b].sum(axis=1), 1)
    with pytest.raises(ValueError, match="beam_search: beam_width must be an integer >= 1; got 0"):
        m.beam_search(source[:, :1], 5, BOS, EOS, 8, beam_width=0)
    with pytest.raises(ValueError, match=r"beam_search: expected one source sequence \(S, 1\); got shape \(5, 3\)"):
        m.beam_search(source, 5, BOS, EOS, 8)


def test_it_learns_to_write_short_strings_backwards():
    config = {"max_len": 4, "hidden_size": 24, "embedding_size": 8, "batch_size": 32, "lr": 0.01, "seed": 0,
              "dtype": "float32", "test_per_length": 20}
    run = TranslateRun(config, "additive")
    while run.step < 250:
        run.train_step()
    accuracy = run.accuracy()
    assert np.mean(list(accuracy.values())) > 0.9
    assert exact_match(run.model, run.test[4], beam_width=3) > 0.8
