"""An encoder-decoder with attention, on the sequence driver.

The encoder is a bidirectional LSTM over the source; the decoder an LSTM cell that, at every step,
attends over all the encoder's outputs with its previous state and reads the context with its
input (Bahdanau, Cho & Bengio 2015, appendix A; Luong et al. 2015's "input feeding").  Without
attention the decoder reads one fixed context at every step instead: the encoder's final states
(Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder").  The decoder is a
cell of the cell protocol, so :func:`run_cell` runs it (compiled) for teacher-forced training;
:meth:`Seq2Seq.greedy` and :meth:`Seq2Seq.beam_search` step it themselves.
"""
from __future__ import annotations

import math

import numpy as np

import minigrad as mg
from minigrad import Tensor, functional as F, nn, ops
from minigrad.nn import Parameter, init
from minigrad.tensor import _rng

from .attention import AdditiveAttention, Memory, MultiplicativeAttention
from .cells import RecurrentCell
from .layers import LSTM, run_cell

__all__ = ["AttentiveDecoderCell", "Seq2Seq"]

ATTENTION = {"additive": lambda q, k, dtype, rng: AdditiveAttention(q, k, dtype=dtype, rng=rng),
             "general": lambda q, k, dtype, rng: MultiplicativeAttention(q, k, "general", dtype=dtype, rng=rng),
             "dot": lambda q, k, dtype, rng: MultiplicativeAttention(q, k, "dot", dtype=dtype, rng=rng)}


class AttentiveDecoderCell(RecurrentCell):
    """An LSTM cell whose every step also reads a context from the encoder.

    ``step(x_t, (h, c))``: the context is ``attention.attend(h, memory)`` (None attention: the fixed
    ``memory`` vector (B, context_size)); then the LSTM equations (PyTorch's, gates i, f, g, o) on
    the input ``[x_t, context]``; the output is ``[h, context]`` (B, hidden_size + context_size).
    Set what it attends to with :meth:`attend_to` before running it.

    Args:
        input_size: of the LSTM (the token embedding).
        hidden_size: of the LSTM.
        context_size: the encoder outputs' size.
        attention: "additive", "general", "dot" or None.
        dtype: of every parameter.
        rng: the ``numpy.random.Generator`` they are drawn from.

    Raises:
        ValueError: an unknown ``attention``.
    """

    def __init__(self, input_size: int, hidden_size: int, context_size: int, attention: str | None = "additive", *,
                 dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype=dtype)
        if attention is not None and attention not in ATTENTION:
            raise ValueError(f"AttentiveDecoderCell: attention must be one of {sorted(ATTENTION)} or None; "
                             f"got {attention!r}")
        rng = _rng(rng)
        bound = 1 / math.sqrt(hidden_size)

        def uniform(*shape):
            return init.uniform_(Parameter(np.empty(shape, self.dtype)), -bound, bound, rng)

        self.context_size = context_size
        self.weight_ih, self.bias = uniform(4 * hidden_size, input_size), uniform(4 * hidden_size)
        self.weight_ch, self.weight_hh = uniform(4 * hidden_size, context_size), uniform(4 * hidden_size, hidden_size)
        self.attention = None if attention is None else ATTENTION[attention](hidden_size, context_size, self.dtype, rng)
        self.memory = None

    @property
    def output_size(self) -> int:
        """Features of ``output_t``: ``[h, context]``, hidden_size + context_size."""
        return self.hidden_size + self.context_size

    def attend_to(self, memory):
        """What the following steps read: a :class:`~minigrad_rnn.attention.Memory` (with attention) or
        a (B, context_size) context (without)."""
        self.memory = memory

    def initial_state(self, batch_size: int):
        """Zeros ``(h, c)``, each (batch_size, hidden_size) in the cell's dtype."""
        zeros = np.zeros((batch_size, self.hidden_size), self.dtype)
        return Tensor._from_array(zeros), Tensor._from_array(zeros.copy())

    def project(self, x: Tensor) -> Tensor:
        """(T, B, input_size) -> (T, B, 4 * hidden_size): the input's part of the gates, for all steps at once."""
        return x @ self.weight_ih.T + self.bias

    def context(self, h: Tensor):
        """``(context (B, context_size), weights (B, T) or None)`` for the previous state ``h``."""
        if self.memory is None:
            raise RuntimeError("AttentiveDecoderCell: call attend_to(memory) before running the cell")
        if self.attention is None:
            return self.memory, None
        return self.attention.attend(h, self.memory)

    def step(self, x_t, state):
        """One step: x_t (B, 4H) from :meth:`project`, state ``(h, c)``; returns ``(output_t, (h, c))``."""
        context, _ = self.context(state[0])
        return self.advance(x_t, state, context)

    def advance(self, x_t, state, context):
        """The LSTM equations on ``[x_t, context]``: ``(output [h, context], (h, c))``."""
        h, c = state
        gates = x_t + context @ self.weight_ch.T + h @ self.weight_hh.T
        i, f, g, o = ops.chunk(gates, 4, axis=1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return ops.concatenate([h, context], axis=1), (h, c)


class Seq2Seq(nn.Module):
    """A bidirectional LSTM encoder and an attentive LSTM decoder over token ids.

    Args:
        source_vocab: the source vocabulary's size.
        target_vocab: the target vocabulary's size.
        embedding_size: E, for both vocabularies.
        hidden_size: H: the encoder has H units per direction, the decoder H.
        attention: "additive" (Bahdanau) or "general" (Luong), or None (a fixed context); "dot"
            needs H == 2H and so fails (ValueError).
        dtype: of every parameter.
        rng: the ``numpy.random.Generator`` they are drawn from.

    ``forward(source (S, B), lengths, target_in (T, B))`` -> logits (T, B, target_vocab), the decoder
    reading ``target_in`` (teacher forcing).  The decoder starts from ``tanh(W [h_fwd; h_bwd])`` of
    the encoder's final states (Bahdanau et al.'s ``s_0``).
    """

    def __init__(self, source_vocab: int, target_vocab: int, embedding_size: int = 32, hidden_size: int = 64,
                 attention: str | None = "additive", *, dtype=np.float32, rng=None):
        super().__init__()
        rng = _rng(rng)
        self.source_embed = nn.Embedding(source_vocab, embedding_size, dtype=dtype, rng=rng)
        self.target_embed = nn.Embedding(target_vocab, embedding_size, dtype=dtype, rng=rng)
        self.encoder = LSTM(embedding_size, hidden_size, bidirectional=True, dtype=dtype, rng=rng)
        self.bridge = nn.Linear(2 * hidden_size, hidden_size, dtype=dtype, rng=rng)
        self.decoder = AttentiveDecoderCell(embedding_size, hidden_size, 2 * hidden_size, attention, dtype=dtype, rng=rng)
        self.head = nn.Linear(self.decoder.output_size, target_vocab, dtype=dtype, rng=rng)

    def encode(self, source, lengths):
        """Point the decoder at the encoded source; return its initial state.  ``source`` (S, B) ids."""
        out, (h_n, _) = self.encoder(self.source_embed(source), lengths=lengths)  # out (S, B, 2H)
        final = ops.concatenate([h_n[0], h_n[1]], axis=1)  # (B, 2H): forward's last step, backward's first
        cell = self.decoder
        cell.attend_to(final if cell.attention is None else cell.attention.remember(out, out, lengths))
        h = ops.tanh(self.bridge(final))
        return h, mg.zeros_like(h)

    def forward(self, source, lengths, target_in):
        """Teacher-forced logits (T, B, target_vocab) for ``source`` (S, B) ids with ``lengths`` (B ints)
        and the decoder's inputs ``target_in`` (T, B) ids."""
        state = self.encode(source, lengths)
        out, _ = run_cell(self.decoder, self.target_embed(target_in), state)
        return self.head(out)

    def _step(self, token_ids: np.ndarray, state):
        """One decoder step from the previous tokens (B,): (log-probabilities (B, V), new state, weights)."""
        x_t = self.decoder.project(self.target_embed(token_ids[None]))[0]
        context, weights = self.decoder.context(state[0])
        output, state = self.decoder.advance(x_t, state, context)
        return F.log_softmax(self.head(output), axis=-1).numpy(), state, weights

    def greedy(self, source, lengths, bos: int, eos: int, max_len: int):
        """The likeliest token at each step until ``eos`` or ``max_len`` tokens, for each sequence of a batch.

        Returns ``(sequences, weights)``: B lists of ids (without ``eos``), and for each sequence a
        (len, S) array of attention weights (None without attention).
        """
        with mg.no_grad():
            state = self.encode(source, lengths)
            B = source.shape[1]
            tokens, done = np.full(B, bos), np.zeros(B, bool)
            sequences, weights = [[] for _ in range(B)], [[] for _ in range(B)]
            for _ in range(max_len):
                log_p, state, w = self._step(tokens, state)
                tokens = log_p.argmax(axis=1)
                for b in np.flatnonzero(~done):
                    if tokens[b] == eos:
                        done[b] = True
                    else:
                        sequences[b].append(int(tokens[b]))
                        if w is not None:
                            weights[b].append(w.numpy()[b])
                if done.all():
                    break
        return sequences, [np.array(w) if w else None for w in weights]

    def beam_search(self, source, length: int, bos: int, eos: int, max_len: int, beam_width: int = 4):
        """The likeliest sequence one beam search finds for ONE source sequence (``source`` (S, 1)).

        Keeps the ``beam_width`` best partial sequences by total log-probability; a sequence that
        emits ``eos`` is finished.  Returns ``(ids, log_probability)`` of the best finished sequence
        (or of the best unfinished one after ``max_len`` steps).  ``beam_width=1`` is greedy search.

        Raises:
            ValueError: ``beam_width`` below 1, or ``source`` not one sequence.
        """
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise ValueError(f"beam_search: beam_width must be an integer >= 1; got {beam_width!r}")
        if source.ndim != 2 or source.shape[1] != 1:
            raise ValueError(f"beam_search: expected one source sequence (S, 1); got shape {source.shape}")
        with mg.no_grad():
            h, c = self.encode(source, [length])
            memory = self.decoder.memory
            beams = [([], 0.0)]  # (ids, log-probability)
            finished = []
            for _ in range(max_len):
                k = len(beams)
                index = np.zeros(k, int)  # every beam reads the same encoded source
                self.decoder.attend_to(memory[index] if isinstance(memory, Tensor) else
                                       Memory(memory.keys[:, index], memory.values[:, index],
                                              None if memory.valid is None else memory.valid[:, index]))
                last = np.array([ids[-1] if ids else bos for ids, _ in beams])
                log_p, (h, c), _ = self._step(last, (h, c))
                totals = np.array([score for _, score in beams])[:, None] + log_p  # (k, V)
                candidates = []
                for flat in np.argsort(totals, axis=None)[::-1][:2 * beam_width]:
                    b, token = divmod(int(flat), totals.shape[1])
                    if token == eos:
                        finished.append((beams[b][0], float(totals[b, token])))
                    else:
                        candidates.append((b, token, float(totals[b, token])))
                    if len(candidates) == beam_width:
                        break
                if not candidates or (finished and max(s for _, s in finished) >= candidates[0][2]):
                    break  # log-probabilities only fall: no unfinished beam can beat the best finished one
                keep = np.array([b for b, _, _ in candidates])
                beams = [(beams[b][0] + [token], score) for b, token, score in candidates]
                h, c = h[keep], c[keep]
            self.decoder.attend_to(memory)
        best = max(finished or beams, key=lambda item: item[1])
        return best[0], best[1]
