import errno
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad.serialization import CheckpointError, load, save


def assert_same(a, b):
    """Same types, dict key order, dtypes, shapes and bits, recursively."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, float):
        assert a.hex() == b.hex()  # tells -0.0 from 0.0
    else:
        assert a == b


def round_trip(obj, path):
    save(obj, path)
    return load(path)


def test_nested_state_round_trips_with_order_and_types(tmp_path):
    state = {
        "model": {"w2": np.arange(6.0).reshape(2, 3), "b1": np.zeros(3, np.float32),
                  "a0": np.ones((1,), np.int16)},
        "optimizer": {"step": 12, "lr": 1e-3, "moments": [np.full(2, 0.5), None]},
        "meta": {"vocab": ["<pad>", "é", "日本", ""], "shape": (2, 3),
                 "nested": ((1, [2.5, "x"]), []), "flags": [True, False],
                 "empty": {}, "tiny": 5e-324, "third": 0.1 + 0.2},
        "specials": [float("nan"), float("inf"), -float("inf"), -0.0, 0.0],
    }
    loaded = round_trip(state, tmp_path / "ckpt.npz")
    assert_same(state, loaded)
    assert list(loaded["model"]) == ["w2", "b1", "a0"]  # not sorted
    assert loaded["meta"]["shape"] == (2, 3)
    assert isinstance(loaded["meta"]["nested"][0][1], list)


def test_top_level_scalars_and_containers(tmp_path):
    for obj in [None, True, 0, -7, 2.5, "hi", [], (), {}, np.float32(1.5)]:
        assert_same(obj, round_trip(obj, tmp_path / "x.ckpt"))


def test_big_ints_are_exact(tmp_path):
    # 10**5000 is past str(int)'s default 4300-digit limit.
    ints = [2**63, -(2**64) - 1, 3**200, 10**5000, -(10**5000) + 1]
    assert round_trip(ints, tmp_path / "ints") == ints


@pytest.mark.parametrize("arr", [
    np.array([1.0, -0.0, np.nan, -np.inf, 5e-324]),
    # NaNs with distinct payloads and signs, including a signalling NaN
    np.array([0x7FF8000000000001, 0xFFF0000000000002, 0x7FF8DEADBEEF0000],
             dtype=np.uint64).view(np.float64),
    np.array([0x7FC00001, 0xFF800002], dtype=np.uint32).view(np.float32),
    np.array([[1, -2], [3, 2**62]], dtype=np.int64),
    np.array([True, False, True]),
    np.arange(256, dtype=np.uint8),
    np.array([1 + 2j, np.nan], dtype=np.complex64),
    np.array([0.1, 65504], dtype=np.float16),
    np.array(3.25),  # 0-d
    np.array(7, dtype=np.int8),
    np.zeros((0, 3), np.float32),  # size 0
    np.zeros((2, 0, 4)),
    np.array(["a", "ünï"]),
    np.array(["2024-01-02"], dtype="datetime64[D]"),
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    np.arange(20.0)[::3],  # non-contiguous view
], ids=lambda a: f"{a.dtype}{a.shape}")
def test_arrays_round_trip_bit_identical(tmp_path, arr):
    loaded = round_trip({"a": arr}, tmp_path / "ckpt")["a"]
    assert_same(arr, loaded)
    assert loaded.flags.writeable


@pytest.mark.parametrize("scalar", [
    np.float32(1.5), np.float64(-0.0), np.float16(2.0), np.int64(-3),
    np.uint8(255), np.int32(2**31 - 1), np.bool_(True), np.complex128(1j),
    np.uint64(0xFFF0000000000002).view(np.float64), np.str_("abc"),
], ids=repr)
def test_numpy_scalars_keep_dtype(tmp_path, scalar):
    loaded = round_trip([scalar], tmp_path / "s")[0]
    assert_same(scalar, loaded)


def test_array_like_objects_load_as_ndarray(tmp_path):
    class FakeTensor:
        def __array__(self, dtype=None, copy=None):
            return np.array([[1.0, 2.0]], dtype=np.float32)

    loaded = round_trip({"param": FakeTensor()}, tmp_path / "t")
    assert_same({"param": np.array([[1.0, 2.0]], np.float32)}, loaded)


def test_minigrad_tensor_loads_as_ndarray(tmp_path):
    from minigrad import Tensor

    w = Tensor(np.array([[0.5, -1.0]], np.float32), requires_grad=True)
    loaded = round_trip({"w": w}, tmp_path / "t")
    assert_same({"w": np.array([[0.5, -1.0]], np.float32)}, loaded)


@pytest.mark.parametrize("make", [
    lambda: np.random.default_rng(12345),
    lambda: np.random.Generator(np.random.MT19937(7)),  # state holds an array
    lambda: np.random.Generator(np.random.Philox(3)),
])
def test_generator_state_restores_same_draws(tmp_path, make):
    rng = make()
    rng.standard_normal(5)  # move away from the seeded state
    save({"rng": rng.bit_generator.state}, tmp_path / "rng")
    expected = rng.standard_normal(10)

    fresh = make()
    fresh.bit_generator.state = load(tmp_path / "rng")["rng"]
    assert np.array_equal(fresh.standard_normal(10), expected)


@st.composite
def trees(draw):
    scalars = (st.none() | st.booleans() | st.integers() | st.floats()
               | st.text() | st.binary(max_size=8).map(
                   lambda b: np.frombuffer(b, np.uint8)))
    return draw(st.recursive(
        scalars,
        lambda kids: (st.lists(kids, max_size=4) | st.tuples(kids, kids)
                      | st.dictionaries(st.text(max_size=5), kids, max_size=4)),
        max_leaves=12))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees())
def test_random_trees_round_trip(tmp_path, tree):
    assert_same(tree, round_trip(tree, tmp_path / "h"))


def test_writes_exactly_the_given_path_as_a_plain_npz(tmp_path):
    path = tmp_path / "model.ckpt"  # no .npz suffix must be appended
    save({"w": np.arange(3), "n": 4}, str(path))
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]

    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["arr_0", "tree"]
        assert np.array_equal(npz["arr_0"], np.arange(3))
        header = json.loads(npz["tree"].tobytes().decode("utf-8"))
    assert header["format"] == "minigrad-checkpoint"
    assert header["version"] == 1


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "c"
    save({"v": 1}, path)
    save({"v": 2}, path)
    assert load(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["c"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save({}, tmp_path / "c")
    finally:
        os.umask(old)
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o644


# --- unsupported objects ---------------------------------------------------

@pytest.mark.parametrize("obj, where, what", [
    ({"model": {"w": object()}}, "obj['model']['w']", "object"),
    ({"layers": [1, {2, 3}]}, "obj['layers'][1]", "set"),
    ([b"bytes"], "obj[0]", "bytes"),
    ({"a": {1: 2}}, "obj['a']", "int"),
    ({"o": np.array([{"a": 1}], dtype=object)}, "obj['o']", "object"),
])
def test_unsupported_objects_raise_type_error_naming_key_path(
        tmp_path, obj, where, what):
    path = tmp_path / "c"
    with pytest.raises(TypeError) as info:
        save(obj, path)
    assert where in str(info.value) and what in str(info.value)
    assert os.listdir(tmp_path) == []  # refused before touching the disk


# --- refusing bad files ----------------------------------------------------

def refused(path, problem):
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    return info.value


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load(tmp_path / "nope.npz")
    assert info.value.filename == str(tmp_path / "nope.npz")


def test_missing_folder_on_save_names_the_path(tmp_path):
    path = tmp_path / "no" / "such" / "ckpt"
    with pytest.raises(FileNotFoundError) as info:
        save({}, path)
    assert info.value.filename == str(path)
    assert info.value.errno == errno.ENOENT


def _touch(marker):
    Path(marker).write_text("unpickled!")


class Payload:
    """Unpickling this creates the marker file: proof that pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch, (self.marker,)


def _tree_entry(tmp_path, tree):
    """The real 'tree' entry of a checkpoint holding ``tree``."""
    save(tree, tmp_path / "real")
    with np.load(tmp_path / "real", allow_pickle=False) as npz:
        return npz["tree"]


def test_pickled_object_array_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(str(marker))
    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:  # valid-looking structure naming arr_0
        np.savez(f, arr_0=evil, tree=_tree_entry(tmp_path, {"w": np.zeros(1)}),
                 allow_pickle=True)

    refused(path, "holds a pickled object array; refusing to load it")
    assert not marker.exists()

    # The test can fail: unpickling this file really would run the payload.
    with np.load(path, allow_pickle=True) as npz:
        npz["arr_0"]
    assert marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    refused(path, "not a minigrad checkpoint")
    assert not marker.exists()


def test_foreign_npz_and_npy_are_refused(tmp_path):
    np.savez(tmp_path / "foreign.npz", x=np.arange(3))
    refused(tmp_path / "foreign.npz", "not a minigrad checkpoint")
    np.save(tmp_path / "plain.npy", np.arange(3))
    refused(tmp_path / "plain.npy", "not a minigrad checkpoint")

    with zipfile.ZipFile(tmp_path / "zip", "w") as z:  # not even .npy inside
        z.writestr("tree", "{}")
    refused(tmp_path / "zip", "not a minigrad checkpoint")

    other = json.dumps({"format": "other", "version": 1, "tree": None})
    with open(tmp_path / "other", "wb") as f:
        np.savez(f, tree=np.frombuffer(other.encode(), np.uint8))
    refused(tmp_path / "other", "not a minigrad checkpoint")


def test_future_version_is_refused(tmp_path):
    header = json.dumps({"format": "minigrad-checkpoint", "version": 2,
                         "tree": None})
    with open(tmp_path / "v2", "wb") as f:
        np.savez(f, tree=np.frombuffer(header.encode(), np.uint8))
    refused(tmp_path / "v2", "unsupported checkpoint version 2")


@pytest.mark.parametrize("data", [
    b"", b"PK", np.random.default_rng(0).bytes(2000), b"\x93NUMPY garbage",
])
def test_random_bytes_are_refused(tmp_path, data):
    (tmp_path / "junk").write_bytes(data)
    refused(tmp_path / "junk", "not a minigrad checkpoint")


def test_zip_magic_followed_by_junk_is_refused(tmp_path):
    (tmp_path / "junk").write_bytes(
        b"PK\x03\x04" + np.random.default_rng(1).bytes(500))
    refused(tmp_path / "junk", "truncated or corrupted")


@pytest.mark.parametrize("tree", [
    {"array": 5},  # no arr_5 in the file
    {"scalar": 0},  # arr_0 exists but is not 0-d
    {"dict": {"a": "b"}},
    {"dict": [["k"]]},
    {"int": 12},
    {"float": "one"},
    {"list": 3},
    {"set": []},
    [1, 2],
    3.5,
], ids=json.dumps)
def test_malformed_structure_is_refused(tmp_path, tree):
    header = json.dumps({"format": "minigrad-checkpoint", "version": 1,
                         "tree": tree})
    with open(tmp_path / "bad", "wb") as f:
        np.savez(f, arr_0=np.arange(2),
                 tree=np.frombuffer(header.encode(), np.uint8))
    refused(tmp_path / "bad", "malformed structure")


def test_header_without_tree_is_refused(tmp_path):
    header = json.dumps({"format": "minigrad-checkpoint", "version": 1})
    with open(tmp_path / "bad", "wb") as f:
        np.savez(f, tree=np.frombuffer(header.encode(), np.uint8))
    refused(tmp_path / "bad", "malformed structure")


def test_missing_array_is_named(tmp_path):
    header = json.dumps({"format": "minigrad-checkpoint", "version": 1,
                         "tree": {"list": [{"array": 0}, {"array": 1}]}})
    with open(tmp_path / "bad", "wb") as f:
        np.savez(f, arr_0=np.arange(2),
                 tree=np.frombuffer(header.encode(), np.uint8))
    refused(tmp_path / "bad", "references missing array 'arr_1'")


STATE = {"w": np.arange(300, dtype=np.float64), "step": 3, "name": "lstm"}


@pytest.fixture
def good_bytes(tmp_path):
    save(STATE, tmp_path / "good")
    return (tmp_path / "good").read_bytes()


@pytest.mark.parametrize("keep", ["half", "all but 3", "all but 1"])
def test_truncated_checkpoint_is_refused(tmp_path, good_bytes, keep):
    n = {"half": len(good_bytes) // 2, "all but 3": len(good_bytes) - 3,
         "all but 1": len(good_bytes) - 1}[keep]
    (tmp_path / "cut").write_bytes(good_bytes[:n])
    refused(tmp_path / "cut", "truncated or corrupted")


def test_flipped_byte_in_array_data_is_refused(tmp_path, good_bytes):
    at = good_bytes.index(np.float64(150).tobytes())
    data = bytearray(good_bytes)
    data[at] ^= 0x01
    (tmp_path / "bad").write_bytes(bytes(data))
    refused(tmp_path / "bad", "truncated or corrupted")


def test_every_truncation_and_byte_flip_is_refused_or_harmless(
        tmp_path, good_bytes):
    path = tmp_path / "bad"
    for n in range(0, len(good_bytes), 7):
        path.write_bytes(good_bytes[:n])
        with pytest.raises(CheckpointError):
            load(path)
    for at in range(0, len(good_bytes), 3):
        data = bytearray(good_bytes)
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            loaded = load(path)
        except CheckpointError:
            continue
        assert_same(STATE, loaded)  # e.g. a zip timestamp was hit


# --- interrupted saves ----------------------------------------------------

def _raiser(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def _partial_savez(f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("target, fake, error", [
    ("os.replace", _raiser(KeyboardInterrupt()), KeyboardInterrupt),
    ("os.replace", _raiser(OSError(errno.EXDEV, "rename failed")), OSError),
    ("os.fsync", _raiser(OSError(errno.EIO, "I/O error")), OSError),
    ("numpy.savez", _partial_savez, OSError),  # disk full mid-write
])
def test_interrupted_save_keeps_old_checkpoint_and_no_temp_files(
        tmp_path, monkeypatch, target, fake, error):
    path = tmp_path / "ckpt.npz"
    save(STATE, path)
    before = path.read_bytes()

    monkeypatch.setattr(target, fake)
    with pytest.raises(error):
        save({"w": np.zeros(5)}, path)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == before
    assert_same(STATE, load(path))


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("os.replace", _raiser(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save(STATE, tmp_path / "ckpt")
    assert os.listdir(tmp_path) == []
