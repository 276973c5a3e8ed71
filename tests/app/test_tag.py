"""End-to-end tests of `minigrad-rnn tag train|eval|predict` on a slice of UD English EWT."""
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn.app import tagger
from minigrad_rnn.app.cli import main
from minigrad_rnn.app.conllu import read_conllu, split_sentences

SMALL = ["--hidden-size", "16", "--word-size", "16", "--char-size", "8", "--char-filters", "16", "--dropout", "0.1"]


@pytest.fixture
def conllu(shared_dir, tmp_path) -> Path:
    """The first 300 sentences of the EWT development file."""
    source = shared_dir / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    path = tmp_path / "ewt-300.conllu"
    path.write_text("\n\n".join(blocks[:300]) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture
def model_dir(capsys, conllu, tmp_path) -> Path:
    out = tmp_path / "tagger"
    code = main(["tag", "train", "--data", str(conllu), "--out", str(out), *SMALL, "--epochs", "4", "--lr", "0.01"])
    assert code == 0, capsys.readouterr().err
    return out


def test_tag_train_writes_a_model_that_learns(capsys, conllu, model_dir):
    stdout = capsys.readouterr().out
    config = json.loads((model_dir / "config.json").read_text())
    assert config["epochs"] == 4 and config["valid_fraction"] == 0.1 and config["hidden_size"] == 16
    with (model_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    accuracy = float(rows[-1]["valid_accuracy"])
    assert accuracy > 0.5  # 17 tags: guessing the most frequent one gives about 0.17
    assert f"UPOS accuracy on 30 validation sentences: {100 * accuracy:.2f}%" in stdout
    checkpoint = mg.load(model_dir / "checkpoint.safetensors")
    assert checkpoint["kind"] == "minigrad-rnn tagger"
    assert "NOUN" in checkpoint["vocab"]["tags"]["items"]


def test_tag_eval_on_the_held_out_split_matches_training(capsys, conllu, model_dir):
    trained = [r for r in csv.DictReader((model_dir / "metrics.csv").open(newline=""))][-1]
    capsys.readouterr()
    assert main(["tag", "eval", "--model", str(model_dir), "--data", str(conllu), "--split", "valid"]) == 0
    stdout = capsys.readouterr().out
    assert f"{100 * float(trained['valid_accuracy']):.2f}%" in stdout.splitlines()[0]
    assert "precision" in stdout and "recall" in stdout
    assert "most frequent confusions (gold -> predicted: count)" in stdout

    # the same figure from the library, on the same split
    sentences = read_conllu(conllu)
    _, valid = split_sentences(sentences, 0.1, 0)
    model, vocabs = tagger.load_tagger(mg.load(model_dir / "checkpoint.safetensors"))
    scores = tagger.score(model, vocabs, valid)
    assert scores.accuracy == pytest.approx(float(trained["valid_accuracy"]), rel=1e-5)
    assert len(scores.gold) == sum(len(s.words) for s in valid)


def test_tag_eval_by_default_scores_the_held_out_sentences_and_all_says_what_trained(capsys, conllu, model_dir):
    # the default was every sentence of the file: 97.4% headlined, mostly training sentences (issue 27)
    capsys.readouterr()
    assert main(["tag", "eval", "--model", str(model_dir), "--data", str(conllu)]) == 0
    default = capsys.readouterr().out.splitlines()[0]
    assert main(["tag", "eval", "--model", str(model_dir), "--data", str(conllu), "--split", "valid"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == default
    assert "held-out sentences of" in default
    assert main(["tag", "eval", "--model", str(model_dir), "--data", str(conllu), "--split", "all"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert re.search(r"on 300 sentences of .*, of which 270 \(90%\) are its training sentences "
                     r"\(--split valid: the held-out ones only\)", first), first


def test_scores_per_tag_and_confusions():
    scores = tagger.Scores(["NOUN", "NOUN", "VERB", "DET"], ["NOUN", "VERB", "VERB", "DET"],
                           [True, False, True, True])
    assert scores.accuracy == 0.75
    assert scores.accuracy_on(False) == (0.0, 1)
    assert scores.per_tag() == [("DET", 1.0, 1.0, 1), ("NOUN", 1.0, 0.5, 2), ("VERB", 0.5, 1.0, 1)]
    assert scores.confusions() == [("NOUN", "VERB", 1)]


def test_tag_predict_names_an_undecodable_stdin_line(capsys, monkeypatch, model_dir):
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"The cat .\nbad \xff\xfe bytes\n")))
    assert main(["tag", "predict", "--model", str(model_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("The/") and captured.out.count("\n") == 1
    assert captured.err == "minigrad-rnn: error: stdin line 2 is not valid UTF-8 (byte 4)\n"


def test_tag_predict_reads_stdin(capsys, monkeypatch, model_dir):
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"The cat sat on the mat .\n\nZorblax   runs quickly !\n")))
    assert main(["tag", "predict", "--model", str(model_dir)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[1] == "" and lines[3] == ""
    pairs = [p.rsplit("/", 1) for p in lines[0].split()]
    assert [w for w, _ in pairs] == ["The", "cat", "sat", "on", "the", "mat", "."]
    tags = set(mg.load(model_dir / "checkpoint.safetensors")["vocab"]["tags"]["items"])
    assert all(t in tags for _, t in pairs)
    assert pairs[-1][1] == "PUNCT"
    assert [w for w, _ in (p.rsplit("/", 1) for p in lines[2].split())] == ["Zorblax", "runs", "quickly", "!"]


def test_char_cnn_ignores_padding():
    rng = np.random.default_rng(0)
    cnn = tagger.CharCNN(10, 4, 6, rng=rng)
    short = cnn(np.array([[3, 4, 0, 0, 0]]), np.array([2]))
    same = cnn(np.array([[3, 4]]), np.array([2]))
    np.testing.assert_allclose(short.data, same.data, rtol=1e-6)
    assert short.shape == (1, 6)


def test_malformed_conllu_names_the_line(capsys, conllu, tmp_path):
    lines = conllu.read_text().split("\n")
    bad = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    lines[bad] = lines[bad].replace("\t", " ", 1)
    broken = tmp_path / "broken.conllu"
    broken.write_text("\n".join(lines))
    code = main(["tag", "train", "--data", str(broken), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"minigrad-rnn: error: {broken}:{bad + 1}: expected 10 tab-separated fields, got 9\n"
    assert not (tmp_path / "o").exists()


def test_tag_bad_inputs(capsys, conllu, model_dir, tmp_path):
    capsys.readouterr()
    before = (model_dir / "checkpoint.safetensors").read_bytes()
    cases = [
        (["tag", "train", "--data", tmp_path / "none.conllu", "--out", tmp_path / "o"], "data file not found"),
        (["tag", "train", "--data", conllu, "--out", tmp_path / "o", "--valid-fraction", "1"],
         "argument --valid-fraction: expected a fraction in (0, 1), got '1'"),
        (["tag", "train", "--data", conllu, "--out", model_dir], "already holds a run (checkpoint.safetensors); continue it with --resume"),
        (["tag", "eval", "--model", tmp_path, "--data", conllu], "no checkpoint found"),
        (["tag", "predict", "--model", conllu], "not a minigrad checkpoint"),
    ]
    for args, expected in cases:
        assert main([str(a) for a in args]) != 0
        err = capsys.readouterr().err
        assert err.startswith("minigrad-rnn: error: ") and err.count("\n") == 1 and expected in err, err
    assert (model_dir / "checkpoint.safetensors").read_bytes() == before


def test_tag_train_resumes_bit_for_bit_also_from_the_middle_of_an_epoch(conllu, tmp_path, capsys):
    tiny = ["tag", "train", "--data", str(conllu), "--hidden-size", "8", "--word-size", "8", "--char-size", "4",
            "--char-filters", "8", "--batch-size", "64"]
    assert main([*tiny, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    from minigrad_rnn.app.tagger import TaggerTrainer

    stop_after = {"batches": 2}  # Ctrl-C inside the second epoch: the loop stops after the step under way
    original = TaggerTrainer.train_epoch

    def interrupted_epoch(self, should_stop=lambda: False):
        if self.epochs == 1:
            return original(self, lambda: self.position >= stop_after["batches"])
        return original(self, should_stop)

    TaggerTrainer.train_epoch = interrupted_epoch
    try:
        assert main([*tiny, "--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    finally:
        TaggerTrainer.train_epoch = original
    saved = mg.load(tmp_path / "split" / "checkpoint.safetensors")
    assert saved["step"] == 1 and saved["position"] == 2  # one epoch done, two batches into the next
    assert main(["tag", "train", "--resume", str(tmp_path / "split"), "--epochs", "2"]) == 0, capsys.readouterr().err
    straight, split = (mg.load(tmp_path / run / "checkpoint.safetensors") for run in ("straight", "split"))
    assert straight["step"] == split["step"] == 2 and split["order"] is None
    for name, weight in straight["model"].items():
        np.testing.assert_array_equal(weight, split["model"][name])
    for run in ("straight", "split"):
        assert {"config.json", "metrics.csv", "checkpoint.safetensors", "results.json", "loss.png"} <= set(
            p.name for p in (tmp_path / run).iterdir())
