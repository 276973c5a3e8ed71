"""Tests for the command's data: text corpus, TBPTT batching, vocabularies, CoNLL-U and tagger batches."""
import json

import numpy as np
import pytest

from minigrad_rnn.app.conllu import (
    IGNORE_INDEX, UPOS_TAGS, Sentence, build_char_vocab, build_tag_vocab, build_word_vocab, pad_batch, parse_conllu,
    read_conllu, split_sentences,
)
from minigrad_rnn.app.corpus import TBPTTBatches, default_corpus_text, eval_batches, load_text, split_corpus
from minigrad_rnn.app.errors import DataError
from minigrad_rnn.app.vocab import Vocabulary

@pytest.fixture
def ewt_dev(shared_file):
    return shared_file("data/ud-english-ewt/en_ewt-ud-dev.conllu")


@pytest.fixture
def shakespeare(shared_file):
    return shared_file("data/tinyshakespeare/input.txt")


# ---------------------------------------------------------------- load_text

def test_load_text_reads_utf8_and_drops_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffcafé\n".encode("utf-8"))
    assert load_text(path) == "café\n"


def test_load_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.bin").write_bytes(b"abc\xff\x00")
    cases = {
        tmp_path / "missing.txt": "data file not found: {}",
        tmp_path: "{} is a directory, not a text file",
        tmp_path / "empty.txt": "{} is empty",
        tmp_path / "binary.bin": "{} is not valid UTF-8 (byte offset 3)",
    }
    for path, message in cases.items():
        with pytest.raises(DataError) as err:
            load_text(path)
        assert str(err.value) == message.format(path)
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- corpus

def test_default_corpus_is_deterministic_python_source():
    text = default_corpus_text()
    assert len(text) == 1_500_000
    assert text == default_corpus_text()
    assert text.count("def ") > 1000 and "import " in text
    assert default_corpus_text(1000) == text[:1000]


def test_default_corpus_rejects_bad_size():
    with pytest.raises(ValueError, match="max_chars must be positive"):
        default_corpus_text(0)


def test_vocabulary_round_trip():
    vocab = Vocabulary.from_text("hello")
    assert vocab.to_list() == ["e", "h", "l", "o"] and len(vocab) == 4
    ids = vocab.encode("hole")
    assert ids.dtype == np.int64 and ids.tolist() == [1, 3, 2, 0]
    assert vocab.decode_text(ids) == "hole" and vocab.decode(ids) == ["h", "o", "l", "e"]
    saved = Vocabulary.from_list(json.loads(json.dumps(["z", "a", "é", "\n"])))
    assert saved.encode("a\néz").tolist() == [1, 3, 2, 0]
    assert saved.decode_text([3, 2]) == "\né"
    assert vocab.encode("").tolist() == [] and vocab.decode_text([]) == ""


def test_vocabulary_errors():
    vocab = Vocabulary.from_text("hello")
    with pytest.raises(DataError, match=r"characters not in the vocabulary: 'q', 'x'$"):
        vocab.encode("hexqx")
    with pytest.raises(DataError, match=r"ids must be in \[0, 4\)"):
        vocab.decode([0, -1])
    with pytest.raises(DataError, match="duplicate"):
        Vocabulary(["a", "a"])
    with pytest.raises(DataError, match="single characters"):
        Vocabulary.from_list(["ab"])


def test_shakespeare_vocabulary_and_split(shakespeare):
    text = load_text(shakespeare)
    vocab = Vocabulary.from_text(text)
    assert (len(text), len(vocab)) == (1_115_394, 65)  # the figures of char-rnn's tinyshakespeare
    train, valid, test = split_corpus(vocab.encode(text))
    assert (len(train), len(valid), len(test)) == (1_003_855, 55_769, 55_770)
    assert vocab.decode_text(valid[:5]) == text[1_003_855:1_003_860]


def test_split_corpus_sizes_and_order():
    ids = np.arange(1000)
    train, valid, test = split_corpus(ids)
    assert (len(train), len(valid), len(test)) == (900, 50, 50)
    assert np.array_equal(np.concatenate([train, valid, test]), ids)
    train, valid, test = split_corpus(ids, (0.95, 0.05, 0.0))
    assert (len(train), len(valid), len(test)) == (950, 50, 0)


def test_split_corpus_too_short_says_what_is_needed():
    with pytest.raises(DataError) as err:
        split_corpus(np.arange(100), min_len=10)
    assert str(err.value) == ("text too short: 100 characters give a valid split of 5, "
                              "each split needs at least 10; need at least 196 characters")
    assert [len(p) for p in split_corpus(np.arange(196), min_len=10)] == [176, 10, 10]
    with pytest.raises(DataError):
        split_corpus(np.arange(195), min_len=10)
    with pytest.raises(ValueError, match="summing to 1"):
        split_corpus(np.arange(100), (0.5, 0.2, 0.2))


# ---------------------------------------------------------------- TBPTT

def test_tbptt_layout_and_continuity():
    ids = np.arange(1003)  # id == position, so values show where each batch comes from
    batches = TBPTTBatches(ids, batch_size=4, seq_len=5)
    assert batches.batches_per_epoch == 49  # rows of 250 ids; 249 have a target
    inputs, targets = next(batches)
    assert inputs.shape == targets.shape == (5, 4) and inputs.dtype == np.int64
    assert inputs[:, 2].tolist() == [500, 501, 502, 503, 504]
    assert np.array_equal(targets, inputs + 1)
    rest = [next(batches) for _ in range(48)]
    assert (batches.epoch, batches.step) == (1, 0)
    rows = np.concatenate([inputs] + [x for x, _ in rest])
    for b in range(4):  # column b of consecutive batches is stream b
        assert rows[:, b].tolist() == list(range(250 * b, 250 * b + 245))
    again, _ = next(batches)  # wraps to the start
    assert np.array_equal(again, inputs) and batches.step == 1
    with pytest.raises(ValueError):
        again[0, 0] = 7  # batches are read-only views


def test_tbptt_targets_are_next_characters():
    ids = np.random.default_rng(0).integers(0, 30, size=500)
    x, y = next(TBPTTBatches(ids, batch_size=3, seq_len=20))
    streams = ids[:498].reshape(3, 166)
    assert np.array_equal(x.T, streams[:, :20]) and np.array_equal(y.T, streams[:, 1:21])


def test_tbptt_resume_is_exact():
    ids = np.random.default_rng(1).integers(0, 50, size=777)
    first = TBPTTBatches(ids, batch_size=2, seq_len=7)
    for _ in range(40):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"epoch": 0, "step": 40, "batch_size": 2, "seq_len": 7, "num_tokens": 777}
    resumed = TBPTTBatches(ids, batch_size=2, seq_len=7)
    resumed.load_state_dict(state)
    for _ in range(120):  # crosses two epoch boundaries (55 batches per epoch)
        (a, b), (c, d) = next(first), next(resumed)
        assert np.array_equal(a, c) and np.array_equal(b, d)
    assert first.state_dict() == resumed.state_dict() == {**state, "epoch": 2, "step": 50}
    with pytest.raises(DataError, match="checkpoint has seq_len=7, but the data gives 8"):
        TBPTTBatches(ids, batch_size=2, seq_len=8).load_state_dict(state)


def test_tbptt_too_short():
    with pytest.raises(DataError, match="needs at least 44"):
        TBPTTBatches(np.arange(43), batch_size=4, seq_len=10)
    assert TBPTTBatches(np.arange(44), batch_size=4, seq_len=10).batches_per_epoch == 1


def test_eval_batches_cover_everything_in_order():
    batches = list(eval_batches(np.arange(23), batch_size=2, seq_len=4))
    assert [x.shape for x, _ in batches] == [(4, 2), (4, 2), (2, 2)]
    inputs = np.concatenate([x for x, _ in batches])
    targets = np.concatenate([y for _, y in batches])
    assert inputs[:, 0].tolist() == list(range(0, 10)) and inputs[:, 1].tolist() == list(range(11, 21))
    assert np.array_equal(targets, inputs + 1)
    with pytest.raises(DataError, match="needs at least 6"):
        eval_batches(np.arange(5), batch_size=3, seq_len=4)


# ---------------------------------------------------------------- CoNLL-U

SAMPLE = """\
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tknew\tknow\tVERB\tVBD\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_"""


def test_parse_conllu_skips_multiword_tokens_and_empty_nodes():
    assert parse_conllu(SAMPLE) == [
        Sentence(["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"]),
        Sentence(["Yes"], ["INTJ"]),
    ]


def test_read_conllu_file_with_crlf(tmp_path):
    path = tmp_path / "s.conllu"
    path.write_bytes((SAMPLE.replace("\n", "\r\n") + "\r\n\r\n").encode())
    assert [s.words for s in read_conllu(path)] == [["I", "do", "n't", "know", "."], ["Yes"]]
    (tmp_path / "c.conllu").write_text("# only a comment\n\n")
    with pytest.raises(DataError, match="contains no sentences"):
        read_conllu(tmp_path / "c.conllu")


@pytest.mark.parametrize("bad_line, message", [
    ("2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_", "expected 10 tab-separated fields, got 9"),
    ("2 do do AUX VBP _ 4 aux _ _", "expected 10 tab-separated fields, got 1"),
    ("two\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_", "bad word ID 'two'"),
    ("2\tdo\tdo\t_\tVBP\t_\t4\taux\t_\t_", "missing UPOS for 'do'"),
    ("7\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_", "expected word ID 2, got 7"),
])
def test_malformed_conllu_line_is_reported_with_its_number(bad_line, message):
    lines = SAMPLE.split("\n")
    lines[4] = bad_line  # line 5 of the text
    with pytest.raises(DataError) as err:
        parse_conllu("\n".join(lines), "x.conllu")
    assert str(err.value).startswith(f"x.conllu:5: {message}")


def test_read_real_ewt_dev(ewt_dev):
    lines = ewt_dev.read_text(encoding="utf-8").split("\n")
    n_sentences = sum(line.startswith("# sent_id") for line in lines)
    n_words = sum(line.split("\t")[0].isdigit() for line in lines)
    sentences = read_conllu(ewt_dev)
    assert len(sentences) == n_sentences == 2001
    assert sum(len(s.words) for s in sentences) == n_words == 25_147
    assert all(len(s.words) == len(s.upos) > 0 for s in sentences)
    assert set(t for s in sentences for t in s.upos) == set(UPOS_TAGS)
    assert sentences[0] == Sentence(["From", "the", "AP", "comes", "this", "story", ":"],
                                    ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"])


# ---------------------------------------------------------------- tagger vocabularies and batches

SENTS = [Sentence(["The", "dog", "saw", "the", "cat"], ["DET", "NOUN", "VERB", "DET", "NOUN"]),
         Sentence(["Go", "!"], ["VERB", "PUNCT"])]


def test_word_char_tag_vocabularies():
    words = build_word_vocab(SENTS)
    assert words.items == ["<pad>", "<unk>", "!", "Go", "The", "cat", "dog", "saw", "the"]
    assert words.encode(["the", "bird"]).tolist() == [8, 1]
    lower = build_word_vocab(SENTS, min_count=2, lower=True)
    assert lower.items == ["<pad>", "<unk>", "the"]
    assert lower.encode(["THE", "dog"]).tolist() == [2, 1]
    chars = build_char_vocab(SENTS)
    assert chars.items[:7] == ["<pad>", "<unk>", "a", "e", "h", "o", "t"]  # each seen twice
    assert chars.encode("Tz").tolist() == [chars.items.index("T"), 1]
    tags = build_tag_vocab(SENTS)
    assert tags.items == ["DET", "NOUN", "VERB", "PUNCT"]
    assert tags.decode(tags.encode(["VERB", "DET"])) == ["VERB", "DET"]
    with pytest.raises(DataError, match=r"ids must be in \[0, 4\)"):
        tags.decode([IGNORE_INDEX])
    with pytest.raises(DataError, match="not in the vocabulary: 'ADJ'"):
        tags.encode(["ADJ"])
    for vocab in (lower, chars, tags):
        restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
        assert restored.to_dict() == vocab.to_dict()
    assert Vocabulary.from_dict(lower.to_dict()).encode(["The"]).tolist() == [2]


def test_pad_batch_shapes_and_values():
    words, chars, tags = build_word_vocab(SENTS), build_char_vocab(SENTS), build_tag_vocab(SENTS)
    batch = pad_batch(SENTS, words, chars, tags)
    assert batch.lengths.tolist() == [5, 2]
    assert batch.word_ids.shape == (5, 2) and batch.char_ids.shape == (5, 2, 3)
    assert batch.word_ids[:, 1].tolist() == [3, 2, 0, 0, 0]
    assert batch.tag_ids[:, 1].tolist() == [2, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert batch.tag_ids[:, 0].tolist() == [0, 1, 2, 0, 1]
    assert batch.char_lengths.T.tolist() == [[3, 3, 3, 3, 3], [2, 1, 0, 0, 0]]
    assert batch.char_ids[1, 1].tolist() == [chars.items.index("!"), 0, 0]
    assert "".join(chars.decode(batch.char_ids[2, 0])) == "saw"
    assert all(a.dtype == np.int64 for a in batch)
    short = pad_batch(SENTS, words, chars, None, max_word_len=2)
    assert short.tag_ids is None and short.char_ids.shape == (5, 2, 2)
    assert short.char_lengths[:, 0].tolist() == [2] * 5


def test_split_sentences_is_deterministic_and_disjoint():
    sents = [Sentence([str(i)], ["NUM"]) for i in range(100)]
    train, valid = split_sentences(sents, 0.1, seed=3)
    assert (len(train), len(valid)) == (90, 10)
    assert split_sentences(sents, 0.1, seed=3) == (train, valid)
    assert split_sentences(sents, 0.1, seed=4) != (train, valid)
    ids = [int(s.words[0]) for s in valid]
    assert ids == sorted(ids) and sorted(ids + [int(s.words[0]) for s in train]) == list(range(100))
    with pytest.raises(DataError, match="a part would be empty"):
        split_sentences(sents[:3], 0.1)
    with pytest.raises(ValueError):
        split_sentences(sents, 1.0)
