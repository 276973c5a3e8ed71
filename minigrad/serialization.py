"""Safe, atomic checkpoints: ``save(obj, path)`` and ``load(path)``.

Format: a plain NumPy ``.npz`` (zip) with arrays as entries ``arr_0``,
``arr_1``, ... and an entry ``tree``: UTF-8 JSON in a uint8 array, shaped
``{"format": "minigrad-checkpoint", "version": 1, "tree": node}``. A node is
null, true/false, a string, or one of ``{"int": hex}``, ``{"float": repr}``,
``{"dict": [[key, node], ...]}``, ``{"list": [...]}``, ``{"tuple": [...]}``,
``{"array": i}`` or ``{"scalar": i}`` (``arr_i``, 0-d, keeps its dtype).

Safety: nothing is ever unpickled (``allow_pickle=False`` both ways); all
entries are read eagerly, so zip CRCs are checked and the file is closed; a
file that is not an intact checkpoint raises ``CheckpointError`` and is
never half-loaded. Atomicity: ``save`` writes a hidden temporary file in the
target's folder, fsyncs it and ``os.replace``-s it onto the target, so a
crash, full disk or Ctrl-C mid-save leaves the old file intact and no litter.
"""

import contextlib
import json
import os
import secrets
import zipfile
import zlib

import numpy as np

__all__ = ["save", "load", "CheckpointError"]

_FORMAT, _VERSION, _TREE = "minigrad-checkpoint", 1, "tree"
_TAGS = {"dict": list, "list": list, "tuple": list, "int": str, "float": str,
         "array": int, "scalar": int}  # tag -> JSON type of its value
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # archive with entries / empty
# What reading a damaged zip or .npy entry raises (found by fuzzing; zipfile
# raises RuntimeError or NotImplementedError for mangled flag/method fields).
_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, KeyError,
                MemoryError, zipfile.BadZipFile, zlib.error)


class CheckpointError(ValueError):
    """The file is not an intact minigrad checkpoint; nothing was loaded."""


def save(obj, path):
    """Atomically write ``obj`` to exactly ``path`` (str or os.PathLike).

    ``obj`` nests dicts (str keys, order kept), lists, tuples, None, bool,
    int (any size), float (incl. nan/inf; NaN payloads survive only in NumPy
    values), str, ndarrays (bit-exact) and NumPy scalars (dtype kept). Other
    ``__array__`` objects (e.g. a minigrad Tensor) are saved as
    ``np.asarray(obj)`` and load as ndarrays; shared arrays load as copies.
    Raises TypeError naming the type and key path (``obj['model']['w']``)
    for anything else, non-str keys, object arrays or a structure that
    contains itself, before touching the disk; OSError naming ``path`` if
    its folder is missing or unwritable, or the write fails (a full disk).
    Temporary files that earlier saves of ``path`` left when killed are removed.
    """
    path = os.fspath(path)
    arrays = {}
    tree = _encode(obj, arrays, "obj", set())
    header = json.dumps({"format": _FORMAT, "version": _VERSION, "tree": tree})
    arrays[_TREE] = np.frombuffer(header.encode("utf-8"), dtype=np.uint8)

    parent, name = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(parent, name)
    tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.tmp")
    try:  # "x", not mkstemp: honours the umask instead of forcing 0600
        f = open(tmp, "xb")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    try:
        with f:  # a file object, so np.savez does not append ".npz"
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.filename is None:  # e.g. the disk is full: say where
            raise OSError(error.errno, error.strerror, path) from error
        raise
    # Make the rename itself durable; some platforms cannot open folders.
    with contextlib.suppress(OSError):
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temporaries(parent: str, name: str):
    """Delete the temporary files that earlier saves of ``name``, killed mid-write, left in ``parent``."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            stem = entry.name[len(name) + 2:-4]  # ".{name}.{12 hex digits}.tmp"
            if (entry.name.startswith(f".{name}.") and entry.name.endswith(".tmp") and len(stem) == 12
                    and all(c in "0123456789abcdef" for c in stem)):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)


def load(path):
    """Return the object saved at ``path`` by ``save``, types as saved.

    Raises FileNotFoundError if ``path`` does not exist, and CheckpointError
    (a ValueError naming the path and the problem) for anything that is not
    an intact minigrad checkpoint: a foreign or non-zip file, a truncated or
    corrupted one, one holding a pickled object array, a malformed structure.
    """
    def refuse(problem):
        return CheckpointError(f"cannot load {os.fspath(path)!r}: {problem}")

    with open(path, "rb") as f:
        if f.read(4) not in _ZIP_MAGIC:
            raise refuse("not a minigrad checkpoint (not an .npz archive)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as npz:
                # Read everything now: CRCs get checked and no handle leaks.
                entries = {name: npz[name] for name in npz.files}
        except _READ_ERRORS as e:
            if "allow_pickle" in str(e):  # numpy refusing an object array
                problem = "holds a pickled object array; refusing to load it"
                raise refuse(problem) from e
            raise refuse(f"truncated or corrupted ({e!r})") from e

    raw = entries.get(_TREE)
    if not (isinstance(raw, np.ndarray) and raw.dtype == np.uint8
            and raw.ndim == 1):
        raise refuse(f"not a minigrad checkpoint (no {_TREE!r} entry)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise refuse(f"malformed structure ({e!r})") from e
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise refuse("not a minigrad checkpoint (no format marker)")
    if (version := header.get("version")) != _VERSION:
        raise refuse(f"unsupported checkpoint version {version!r} "
                     f"(this minigrad reads version {_VERSION})")
    try:
        return _decode(header["tree"], entries)
    except (KeyError, ValueError, RecursionError) as e:
        raise refuse(f"malformed structure ({e!r})") from e


def _encode(obj, arrays, where, open_containers: set):
    """JSON-able description of ``obj``; arrays are appended to ``arrays``.

    ``open_containers`` holds the ids of the containers being encoded around ``obj``: meeting
    one again means the structure contains itself (TypeError, not a RecursionError).
    """
    # First: NumPy scalars have __array__, and np.float64 is also a float.
    if hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise TypeError(f"cannot save array of dtype {arr.dtype} at {where}"
                            ": object arrays would need pickle")
        arrays[f"arr_{len(arrays)}"] = arr
        tag = "scalar" if isinstance(obj, np.generic) else "array"
        return {tag: len(arrays) - 1}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):  # hex: exact, and free of str(int)'s digit limit
        return {"int": hex(obj)}
    if isinstance(obj, float):  # repr is exact and spells nan/inf
        return {"float": repr(float(obj))}
    if isinstance(obj, (dict, list, tuple)):
        if id(obj) in open_containers:
            raise TypeError(f"cannot save a structure that contains itself: {where} is one of its own "
                            "containers")
        open_containers.add(id(obj))
        try:
            return _encode_container(obj, arrays, where, open_containers)
        finally:
            open_containers.discard(id(obj))
    raise TypeError(f"cannot save object of type {type(obj).__name__} at "
                    f"{where}: not a container, number, str or array")


def _encode_container(obj, arrays, where, open_containers: set):
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be str, got {type(key).__name__}"
                                f" key {key!r} in {where}")
        return {"dict": [[k, _encode(v, arrays, f"{where}[{k!r}]", open_containers)]
                         for k, v in obj.items()]}
    tag = "tuple" if isinstance(obj, tuple) else "list"
    return {tag: [_encode(v, arrays, f"{where}[{i}]", open_containers)
                  for i, v in enumerate(obj)]}


def _decode(node, arrays):
    """Inverse of ``_encode``; raises ValueError if the tree is malformed."""
    if node is None or isinstance(node, (bool, str)):
        return node
    if type(node) is not dict or len(node) != 1:
        raise ValueError(f"unexpected node {str(node)[:60]}")
    [(tag, value)] = node.items()
    if type(value) is not _TAGS.get(tag):
        raise ValueError(f"unexpected node {str(node)[:60]}")
    if tag == "dict":
        if not all(type(p) is list and len(p) == 2 and type(p[0]) is str
                   for p in value):
            raise ValueError(f"bad dict items {str(value)[:60]}")
        return {key: _decode(v, arrays) for key, v in value}
    if tag in ("list", "tuple"):
        items = [_decode(v, arrays) for v in value]
        return tuple(items) if tag == "tuple" else items
    if tag in ("int", "float"):
        return int(value, 16) if tag == "int" else float(value)
    arr = arrays.get(name := f"arr_{value}")
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"references missing array {name!r}")
    if tag == "scalar" and arr.ndim != 0:
        raise ValueError(f"scalar {name!r} is not 0-d")
    return arr if tag == "array" else arr[()]
