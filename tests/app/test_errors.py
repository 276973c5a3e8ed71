"""Bad input to `minigrad-rnn`: one line "minigrad-rnn: error: ..." on stderr, a non-zero exit,
no traceback, and no earlier checkpoint damaged."""
import subprocess
import sys
from pathlib import Path

import pytest

import minigrad as mg
from minigrad_rnn.app.cli import main

TINY = ["--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--sample-every", "0"]


@pytest.fixture
def text_file(shared_dir, tmp_path) -> Path:
    path = tmp_path / "shakespeare.txt"
    source = shared_dir / "data" / "tinyshakespeare" / "input.txt"
    path.write_text(source.read_text(encoding="utf-8")[:5_000], encoding="utf-8")
    return path


@pytest.fixture
def trained(capsys, text_file, tmp_path) -> Path:
    """A finished tiny run; the tests check that failures leave its checkpoint untouched."""
    out = tmp_path / "trained"
    assert main(["train", "--data", str(text_file), *TINY, "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def fails(capsys, args, status=None) -> str:
    """Run main(args), check it failed with a one-line error, and return that line."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code != 0 and (status is None or code == status)
    assert err.startswith("minigrad-rnn: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err.strip()


def test_missing_data_file(capsys, tmp_path):
    err = fails(capsys, ["train", "--data", tmp_path / "nope.txt", "--out", tmp_path / "o"], 1)
    assert err == f"minigrad-rnn: error: data file not found: {tmp_path / 'nope.txt'}"
    assert not (tmp_path / "o").exists()


def test_empty_data_file(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert "is empty" in fails(capsys, ["train", "--data", tmp_path / "empty.txt", "--out", tmp_path / "o"], 1)


def test_non_utf8_data_file(capsys, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    err = fails(capsys, ["train", "--data", tmp_path / "latin1.txt", "--out", tmp_path / "o"], 1)
    assert "is not valid UTF-8 (byte offset 3)" in err


def test_too_short_data_file(capsys, tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be.\n")
    err = fails(capsys, ["train", "--data", tmp_path / "short.txt", "--out", tmp_path / "o"], 1)
    assert "text too short" in err and "short.txt" in err
    assert not (tmp_path / "o").exists()


def test_data_file_is_a_directory(capsys, tmp_path):
    assert "is a directory" in fails(capsys, ["train", "--data", tmp_path, "--out", tmp_path / "o"], 1)


@pytest.mark.parametrize("option, value, expected", [
    ("--hidden-size", "-3", "argument --hidden-size: expected a positive integer up to 1048576, got '-3'"),
    ("--hidden-size", "0", "argument --hidden-size: expected a positive integer up to 1048576, got '0'"),
    ("--num-layers", "two", "argument --num-layers: expected a positive integer up to 1048576, got 'two'"),
    ("--dropout", "1", "argument --dropout: expected a probability in [0, 1), got '1'"),
    ("--dropout", "-0.1", "argument --dropout: expected a probability in [0, 1), got '-0.1'"),
    ("--seq-len", "0", "argument --seq-len: expected a positive integer up to 1048576, got '0'"),
    ("--batch-size", "1.5", "argument --batch-size: expected a positive integer up to 1048576, got '1.5'"),
    ("--lr", "0", "argument --lr: expected a positive number, got '0'"),
    ("--lr", "nan", "argument --lr: expected a positive number, got 'nan'"),
    ("--clip", "-1", "argument --clip: expected a number >= 0, got '-1'"),
    ("--minutes", "-2", "argument --minutes: expected a positive number, got '-2'"),
    ("--cell", "transformer", "argument --cell: invalid choice: 'transformer' (choose from "),
])
def test_nonsensical_hyper_parameters(capsys, tmp_path, option, value, expected):
    err = fails(capsys, ["train", option, value, "--out", tmp_path / "o"], 2)
    assert err.startswith(f"minigrad-rnn: error: {expected}")
    assert not (tmp_path / "o").exists()


def test_unknown_command_and_missing_arguments(capsys):
    assert "invalid choice: 'fly'" in fails(capsys, ["fly"], 2)
    assert "required: COMMAND" in fails(capsys, [], 2)
    assert "--checkpoint" in fails(capsys, ["sample"], 2)


def test_help_exits_zero(capsys):
    assert main(["train", "--help"]) == 0
    assert "--hidden-size" in capsys.readouterr().out


def test_prime_outside_the_vocabulary(capsys, trained):
    before = (trained / "checkpoint.safetensors").read_bytes()
    err = fails(capsys, ["sample", "--checkpoint", trained, "--prime", "Ωmega€"], 1)
    assert "--prime has characters not in the vocabulary: 'Ω', '€'" in err
    assert (trained / "checkpoint.safetensors").read_bytes() == before


def test_sample_options(capsys, trained):
    assert "argument --temperature" in fails(capsys, ["sample", "--checkpoint", trained, "--temperature", "0"], 2)
    assert "argument --length" in fails(capsys, ["sample", "--checkpoint", trained, "--length", "-1"], 2)


def test_missing_checkpoint(capsys, tmp_path):
    err = fails(capsys, ["sample", "--checkpoint", tmp_path], 1)
    assert err == f"minigrad-rnn: error: no checkpoint found at {tmp_path / 'checkpoint.safetensors'}"


def test_corrupted_checkpoint(capsys, tmp_path, trained):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = bytearray((trained / "checkpoint.safetensors").read_bytes())
    data[-200:-136] = bytes(64)  # zero a stretch of a tensor
    (damaged / "checkpoint.safetensors").write_bytes(bytes(data))
    for args in (["sample", "--checkpoint", damaged], ["train", "--resume", damaged]):
        assert "does not match its SHA-256 (the file is corrupted)" in fails(capsys, args, 1)
    (damaged / "checkpoint.safetensors").write_bytes(bytes(data[:1000]))  # truncated
    assert "truncated or corrupted" in fails(capsys, ["sample", "--checkpoint", damaged], 1)
    assert (damaged / "checkpoint.safetensors").read_bytes() == bytes(data[:1000])  # left as it was


def test_foreign_checkpoint(capsys, tmp_path):
    import numpy as np
    import safetensors.numpy

    import minigrad as mg
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    assert "not a minigrad checkpoint" in fails(capsys, ["sample", "--checkpoint", tmp_path / "plain.npz"], 1)
    (tmp_path / "text").write_text("hello, this is text")
    assert "not a minigrad checkpoint" in fails(capsys, ["sample", "--checkpoint", tmp_path / "text"], 1)
    for other in ({"weights": np.zeros(3)}, ["a", "list"], None):  # minigrad files, not models of ours
        mg.save(other, tmp_path / "other.safetensors")
        err = fails(capsys, ["sample", "--checkpoint", tmp_path / "other.safetensors"], 1)
        assert "is not a minigrad-rnn character language model checkpoint" in err
    safetensors.numpy.save_file({"weight": np.zeros(3)}, tmp_path / "torch.safetensors")  # another program's
    err = fails(capsys, ["sample", "--checkpoint", tmp_path / "torch.safetensors"], 1)
    assert "is not a minigrad-rnn character language model checkpoint" in err


def test_tagger_checkpoint_is_not_a_language_model(capsys, tmp_path):
    import numpy as np

    import minigrad as mg
    mg.save({"kind": "minigrad-rnn tagger", "version": 1, "model": {"w": np.zeros(2)}}, tmp_path / "checkpoint.safetensors")
    assert "not a minigrad-rnn character language model" in fails(capsys, ["sample", "--checkpoint", tmp_path], 1)
    assert "not a minigrad-rnn character language model" in fails(capsys, ["train", "--resume", tmp_path], 1)


def test_unwritable_out(capsys, text_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = fails(capsys, ["train", "--data", text_file, *TINY, "--steps", "1", "--out", blocker / "run"], 1)
    assert err.startswith(f"minigrad-rnn: error: cannot write to output folder {blocker / 'run'}: ")
    assert blocker.read_text() == "not a folder"


def test_resume_with_changed_data_keeps_the_checkpoint(capsys, text_file, trained):
    before = (trained / "checkpoint.safetensors").read_bytes()
    text_file.write_text(text_file.read_text() + "more text\n")
    err = fails(capsys, ["train", "--resume", trained, "--steps", "4"], 1)
    assert "changed since the checkpoint was written" in err
    assert (trained / "checkpoint.safetensors").read_bytes() == before


def test_resume_with_bad_options_keeps_the_checkpoint(capsys, trained):
    before = (trained / "checkpoint.safetensors").read_bytes()
    fails(capsys, ["train", "--resume", trained, "--dropout", "1.5"], 2)
    fails(capsys, ["train", "--resume", trained, "--cell", "gru"], 1)
    fails(capsys, ["train", "--resume", trained, "--out", trained.parent / "elsewhere"], 1)
    assert (trained / "checkpoint.safetensors").read_bytes() == before


def test_the_library_imports_none_of_the_commands_packages():
    code = ("import sys, minigrad_rnn, minigrad_rnn.examples; "
            "print(sorted(m for m in ('argparse', 'tqdm', 'matplotlib', 'threadpoolctl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_app_extra_is_one_line_naming_the_install():
    code = ("import sys; sys.modules['tqdm'] = None; from minigrad_rnn.app import main; "
            "sys.exit(main(['--version']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "minigrad-rnn: error: the command needs tqdm: pip install 'minigrad[app]'\n"


@pytest.mark.parametrize("args, expected", [
    (["train", "--hidden-size", "99999999999999999999"],
     "argument --hidden-size: expected a positive integer up to 1048576, got '99999999999999999999'"),
    (["train", "--hidden-size", "100000"], "the LSTM of hidden size 100000 would need about"),
    (["experiment", "adding", "--hidden-size", "300000"], "the LSTM of hidden size 300000 would need about"),
    (["train", "--data", "/dev/zero"], "/dev/zero is not a regular file (a device or a pipe); expected a text file"),
])
def test_absurd_sizes_and_endless_data_are_refused_before_allocating(args, expected, tmp_path, capsys):
    assert main(args + ["--out", str(tmp_path / "o")]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("minigrad-rnn: error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "o").exists()


def test_a_tampered_vocabulary_is_blamed_on_the_checkpoint_not_the_data(capsys, text_file, trained):
    checkpoint = mg.load(trained / "checkpoint.safetensors")
    checkpoint["vocab"] = checkpoint["vocab"][:3] + [checkpoint["vocab"][0]]  # a repeated character
    mg.save(checkpoint, trained / "checkpoint.safetensors")
    err = fails(capsys, ["train", "--resume", trained, "--steps", "4"])
    assert f"the checkpoint in {trained} is damaged: its vocabulary:" in err and str(text_file) not in err, err
