"""Safe, atomic checkpoints: ``save(obj, path)`` and ``load(path)``, as safetensors files.

Format: a `safetensors <https://github.com/huggingface/safetensors>`_ file (the pickle-free
format of PyTorch and Hugging Face). Every array is a tensor named by its path in ``obj``
(``model.cell.weight_ih``, ``optimizer.moments.0``), so a saved ``state_dict`` loads in
PyTorch with ``safetensors.torch.load_file`` + ``load_state_dict``. The header's
``__metadata__`` holds ``format`` (``"minigrad-checkpoint"``), ``version`` (``"3"``),
``tree``, ``sha256`` and ``digest``. ``tree`` is JSON: a node is null, true/false, a string, or one of
``{"int": hex}``, ``{"float": repr}``, ``{"dict": [[key, node], ...]}``, ``{"list": [...]}``,
``{"tuple": [...]}``, ``{"tensor": name}`` or ``{"scalar": name}`` (a 0-d tensor loaded as a
NumPy scalar). ``sha256`` maps each tensor name to the SHA-256 of its bytes: safetensors has
no checksum of its own, and a flipped bit in a weight must not load silently. ``digest`` is the
SHA-256 of everything else the file says (format, version, tree, the checksums, each tensor's
dtype and shape), so a changed byte in the header cannot rename a key or turn ``lr`` 0.001 into
9.001 either. Version 2 files (without ``digest``) still load.

Safety: nothing is ever unpickled. The header's length is checked against the file's size
before anything is read, the safetensors library checks that the declared tensors exactly
fill the file, the tree and every checksum are verified, and only then is anything returned:
a file that is not an intact checkpoint raises ``CheckpointError`` and is never half-loaded.
A safetensors file written by another program (no minigrad metadata) loads as a flat
``{name: ndarray}``. Atomicity: ``save`` writes a hidden temporary file in the target's
folder, fsyncs it and ``os.replace``-s it onto the target, so a crash, full disk or Ctrl-C
mid-save leaves the old file intact; temporaries left by killed saves are removed next time.
"""

import contextlib
import hashlib
import json
import os
import secrets
import stat

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _load_safetensors
from safetensors.numpy import save as _save_safetensors

__all__ = ["CheckpointError", "load", "save"]

_FORMAT, _VERSION, _READS = "minigrad-checkpoint", "3", ("2", "3")  # version 2: no digest
_MAX_DEPTH = 100  # containers nested deeper are refused by save and by load (no RecursionError)
_TAGS = {"dict": list, "list": list, "tuple": list, "int": str, "float": str,
         "tensor": str, "scalar": str}  # tag -> JSON type of its value
# The dtypes a safetensors file holds (safetensors.numpy's table; bfloat16 and fp8 have no NumPy dtype).
_DTYPES = frozenset(map(np.dtype, ["bool", "u1", "i1", "u2", "i2", "f2", "u4", "i4", "f4", "c8", "u8", "i8",
                                   "f8"]))
_OURS = frozenset({"format", "version", "tree", "sha256", "digest"})  # any of them: a file of ours, checked whole
_HEADER_LIMIT = 100 * 2**20  # the safetensors library's own limit on the JSON header


class CheckpointError(ValueError):
    """The file is not an intact minigrad checkpoint; nothing was loaded."""


def save(obj, path):
    """Atomically write ``obj`` to exactly ``path`` (str or os.PathLike) as a safetensors file.

    ``obj`` nests dicts (str keys, order kept), lists, tuples, None, bool, int (any size), float
    (incl. nan/inf), str, ndarrays and NumPy scalars of a dtype safetensors holds (bool, int and
    uint of 8-64 bits, float16/32/64, complex64; bit-exact, NaN payloads kept). Other
    ``__array__`` objects (e.g. a minigrad Tensor) are saved as ``np.asarray(obj)`` and load as
    ndarrays; shared arrays load as copies, Fortran-ordered ones as C-ordered, ``np.str_`` as str.

    Raises TypeError naming the type and key path (``obj['model']['w']``) for anything else,
    non-str keys, other dtypes (str, datetime, complex128, object), containers nested more than
    100 deep or a structure that contains itself, before touching the disk; OSError naming
    ``path`` if its folder is missing or unwritable, or the write fails (a full disk).
    """
    path = os.fspath(path)
    tensors = {}
    tree = _encode(obj, tensors, (), "obj", set())
    metadata = {"format": _FORMAT, "version": _VERSION, "tree": json.dumps(tree),
                "sha256": json.dumps({name: _sha256(t) for name, t in tensors.items()})}
    metadata["digest"] = _digest(metadata, tensors)
    _write_atomically(path, _save_safetensors(tensors, metadata=metadata))


def _digest(metadata: dict, tensors: dict) -> str:
    """The SHA-256 of what a file says besides its tensors' bytes: its metadata and each tensor's dtype and shape."""
    said = {key: metadata[key] for key in ("format", "version", "tree", "sha256")}
    said["tensors"] = {name: [t.dtype.str, list(t.shape)] for name, t in tensors.items()}
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def _write_atomically(path: str, data: bytes):
    parent, name = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(parent, name)
    tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.tmp")
    try:  # "x", not mkstemp: honours the umask instead of forcing 0600
        f = open(tmp, "xb")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    try:
        with f:
            f.write(data)
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

    A safetensors file without minigrad's metadata (e.g. written by
    ``safetensors.torch.save_file(module.state_dict(), path)``) loads as ``{name: ndarray}`` in
    the file's order, ready for ``Module.load_state_dict``.

    Raises FileNotFoundError if ``path`` does not exist, and CheckpointError (a ValueError naming
    the path and the problem) for anything that is not an intact checkpoint: not a regular file
    (a folder, a FIFO, a device: refused before it is opened), not a safetensors file (an
    ``.npz`` of minigrad 0.1 included), a header claiming more bytes than the file holds, a
    truncated or corrupted file, a tensor that fails its checksum, metadata that fails its
    digest, a dtype NumPy lacks (bfloat16), a malformed structure (or one nested more than 100
    deep), a newer version.
    """
    def refuse(problem):
        return CheckpointError(f"cannot load {os.fspath(path)!r}: {problem}")

    if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): opening a FIFO would block
        raise refuse("not a regular file")
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):  # replaced since the check
            raise refuse("not a regular file")
        prefix = f.read(8)
        if prefix[:2] == b"PK":
            raise refuse("not a minigrad checkpoint (an .npz archive; minigrad now saves safetensors files)")
        header_size = int.from_bytes(prefix, "little")
        if len(prefix) < 8 or header_size > _HEADER_LIMIT:
            raise refuse("not a minigrad checkpoint (not a safetensors file)")
        if header_size > info.st_size - 8:
            raise refuse(f"truncated or corrupted (its header claims {header_size} bytes, the file holds "
                         f"{info.st_size})")
        data = prefix + f.read(info.st_size - 8)  # the size is checked, so this read is bounded
    try:
        header = json.loads(data[8:8 + header_size])
        tensors = _load_safetensors(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise refuse(f"not a minigrad checkpoint (the header is not JSON: {e!r})") from e
    except KeyError as e:  # safetensors.numpy's dtype table lacks it
        raise refuse(f"holds a tensor of dtype {e.args[0]}, which NumPy cannot represent") from e
    except SafetensorError as e:
        raise refuse(f"truncated or corrupted ({e})") from e

    metadata = header.get("__metadata__") or {}
    if not _OURS & set(metadata):  # written by another program: its tensors, as they are
        return {name: tensors[name] for name in header if name != "__metadata__"}
    if metadata.get("format") != _FORMAT:
        raise refuse(f"not a minigrad checkpoint (format {metadata.get('format')!r})")
    if (version := metadata.get("version")) not in _READS:
        raise refuse(f"unsupported checkpoint version {version!r} (this minigrad reads versions "
                     f"{', '.join(_READS)})")
    try:
        if version != "2" and metadata.get("digest") != _digest(metadata, tensors):
            raise refuse("its metadata does not match its digest (the file is corrupted)")
        checksums = json.loads(metadata["sha256"])
        if not isinstance(checksums, dict) or set(checksums) != set(tensors):
            raise ValueError("the checksums do not list exactly the file's tensors")
        for name, array in tensors.items():
            if checksums[name] != _sha256(array):
                raise refuse(f"tensor {name!r} does not match its SHA-256 (the file is corrupted)")
        unused = set(tensors)
        obj = _decode(json.loads(metadata["tree"]), tensors, unused)
        if unused:
            raise ValueError(f"tensors {sorted(unused)[:5]} are not in the tree")
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise refuse(f"malformed structure ({e!r})") from e
    return obj


def _encode(obj, tensors, keys: tuple, where: str, open_containers: set):
    """JSON-able description of ``obj``; its arrays are added to ``tensors`` under their paths.

    ``keys`` is ``obj``'s path (joined with dots it names a tensor); ``where`` spells it for
    errors. ``open_containers`` holds the ids of the containers being encoded around ``obj``:
    meeting one again means the structure contains itself (TypeError, not a RecursionError).
    """
    if isinstance(obj, str):  # np.str_ too (it has __array__, but safetensors holds no strings)
        return str(obj)
    # Then: NumPy scalars have __array__, and np.float64 is also a float.
    if hasattr(obj, "__array__"):
        array = np.asarray(obj)
        little_endian = array.dtype.newbyteorder("<")
        if little_endian not in _DTYPES:
            raise TypeError(f"cannot save array of dtype {array.dtype} at {where}: a safetensors file "
                            "holds bool, (u)int8-64, float16/32/64 and complex64 tensors")
        name = ".".join(keys) or "tensor"
        while name in tensors or name == "__metadata__":  # {"a.b": x, "a": {"b": y}} would share a name
            name += "~"
        tensors[name] = np.array(array, dtype=little_endian, order="C", copy=None)
        return {"scalar" if isinstance(obj, np.generic) else "tensor": name}
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):  # hex: exact, and free of str(int)'s digit limit
        return {"int": hex(obj)}
    if isinstance(obj, float):  # repr is exact and spells nan/inf
        return {"float": repr(float(obj))}
    if isinstance(obj, (dict, list, tuple)):
        if len(open_containers) >= _MAX_DEPTH:
            raise TypeError(f"cannot save {where}: containers nest more than {_MAX_DEPTH} deep")
        if id(obj) in open_containers:
            raise TypeError(f"cannot save a structure that contains itself: {where} is one of its own "
                            "containers")
        open_containers.add(id(obj))
        try:
            return _encode_container(obj, tensors, keys, where, open_containers)
        finally:
            open_containers.discard(id(obj))
    raise TypeError(f"cannot save object of type {type(obj).__name__} at "
                    f"{where}: not a container, number, str or array")


def _encode_container(obj, tensors, keys: tuple, where: str, open_containers: set):
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be str, got {type(key).__name__}"
                                f" key {key!r} in {where}")
        return {"dict": [[k, _encode(v, tensors, (*keys, k), f"{where}[{k!r}]", open_containers)]
                         for k, v in obj.items()]}
    tag = "tuple" if isinstance(obj, tuple) else "list"
    return {tag: [_encode(v, tensors, (*keys, str(i)), f"{where}[{i}]", open_containers)
                  for i, v in enumerate(obj)]}


def _decode(node, tensors, unused: set, depth: int = 0):
    """Inverse of ``_encode``; removes the tensors it uses from ``unused``; raises ValueError if the tree is malformed."""
    if node is None or isinstance(node, (bool, str)):
        return node
    if depth > _MAX_DEPTH:
        raise ValueError(f"containers nest more than {_MAX_DEPTH} deep")
    if type(node) is not dict or len(node) != 1:
        raise ValueError(f"unexpected node {str(node)[:60]}")
    [(tag, value)] = node.items()
    if type(value) is not _TAGS.get(tag):
        raise ValueError(f"unexpected node {str(node)[:60]}")
    if tag == "dict":
        if not all(type(p) is list and len(p) == 2 and type(p[0]) is str for p in value):
            raise ValueError(f"bad dict items {str(value)[:60]}")
        return {key: _decode(v, tensors, unused, depth + 1) for key, v in value}
    if tag in ("list", "tuple"):
        items = [_decode(v, tensors, unused, depth + 1) for v in value]
        return tuple(items) if tag == "tuple" else items
    if tag in ("int", "float"):
        return int(value, 16) if tag == "int" else float(value)
    if value not in tensors:
        raise ValueError(f"references missing tensor {value!r}")
    if value not in unused:
        raise ValueError(f"references tensor {value!r} twice")
    unused.discard(value)
    array = tensors[value]
    if tag == "scalar" and array.ndim != 0:
        raise ValueError(f"scalar {value!r} is not 0-d")
    return array if tag == "tensor" else array[()]
