"""What both sides' checkpoints share (numpy only): the error, the checksum, the checks, the atomic write.

A checkpoint file is untrusted input. Every loader reads it through ``read_file`` and checks what
it parsed with ``check_tree`` (names, dtype, shape, finite values) and ``verify_digest`` (a sha256
over every tensor, written by ``digest`` into the files this project saves), so a truncated,
corrupt, hostile or mismatched file is a CheckpointError naming the file, never a library
exception and never a model holding other values (docs/design.md, checkpoints).
Writes go through ``atomic_write``: a unique temporary file in the target's folder, fsync, then
``os.replace``; a crash at any point leaves the previous file whole.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import safetensors.numpy  # numpy-only: safetensors' framework-free reader and writer

from quickstart_parity_common.data import DataError
from quickstart_parity_common.models import MODEL_NAMES, model_help

# The digest's key in the files this project writes (a state_dict's ``_metadata``, a msgpack
# envelope, safetensors metadata).
DIGEST_KEY = "sha256"
RESUME_NAME = "epoch-{epoch:04d}"
# Config fields that change the numbers: a resumed run must use the checkpoint's values.
RESUME_FIELDS = ("model", "hidden", "batch_size", "lr", "momentum", "weight_decay", "seed", "limit_train")
# The data's identity (quickstart_parity_common.data.data_identity) in a resume checkpoint's config and the folder's record.
DATA_FIELD = "data_sha256"
# A checkpoint folder belongs to one run: RUN_FILE records that run's RESUME_FIELDS and data, LOCK_FILE
# is held (flock) by the run writing there, so a second writer is refused while the first is alive.
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
_CHECKPOINT_NAME = re.compile(r"epoch-\d+(\..*)?")
PARAMS_FORMAT = "quickstart-parity/params-v1"
RESUME_FORMAT = "quickstart-parity/resume-v1"


class CheckpointError(Exception):
    """A checkpoint cannot be read, does not fit the model, or cannot be written."""


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``; lists and tuples by index. Leaves are left as they are."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    if not out and prefix:
        out[prefix] = type(tree).__name__  # an empty container is part of the structure too
    return out


def digest(flat: Mapping[str, object]) -> str:
    """sha256 over every entry, in name order: name, dtype, shape and raw bytes of each array;
    ``repr`` of any other leaf (ints, strings, None)."""
    h = hashlib.sha256()
    for name in sorted(flat):
        value = flat[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            h.update(f"{value.dtype.str}{value.shape}".encode() + b"\0")
            h.update(value.tobytes())
        else:
            h.update(repr(value).encode() + b"\0")
    return h.hexdigest()


def verify_digest(flat: Mapping[str, object], expected: object, source: str) -> None:
    """Raise CheckpointError unless ``expected`` is the ``digest`` of ``flat``."""
    if not isinstance(expected, str) or digest(flat) != expected:
        raise CheckpointError(f"{source}: checksum mismatch: the file is corrupt or was changed after it was written")


def check_tree(got: Mapping[str, object], want: Mapping[str, np.ndarray], source: str, what: str = "parameter") -> None:
    """Raise CheckpointError naming the first missing, unexpected, non-array, mis-typed, mis-shaped
    or non-finite entry of ``got`` (flat, numpy leaves) against the template ``want``."""
    for name, ref in want.items():
        if name not in got:
            raise CheckpointError(f"{source}: missing {what} {name} (shape {tuple(np.shape(ref))})")
        value = got[name]
        if not isinstance(ref, np.ndarray):  # a structural leaf (an empty container, a constant)
            if type(value) is not type(ref) or value != ref:
                raise CheckpointError(f"{source}: {what} {name} is {value!r}, expected {ref!r}")
            continue
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{source}: {what} {name} is a {type(value).__name__}, not an array")
        if value.dtype != ref.dtype:
            raise CheckpointError(f"{source}: {what} {name} has dtype {value.dtype}, the model's is {ref.dtype}")
        if value.shape != ref.shape:
            raise CheckpointError(
                f"{source}: {name} has shape {value.shape} but the model expects {ref.shape} "
                "(was it saved from a model with other hidden widths?)"
            )
        if not np.isfinite(value).all():
            raise CheckpointError(f"{source}: {what} {name} holds NaN or inf values")
    extra = [k for k in got if k not in want]
    if extra:
        raise CheckpointError(f"{source}: unexpected {what} {extra[0]} (not in the model)")


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file; CheckpointError for anything else (absent, a folder, a device)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: is not a regular file (a device, pipe or socket)")
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None


def check_target(path: str | os.PathLike) -> None:
    """Refuse, before any work, a save target that is a folder, a symlink or a device, or whose
    folder is missing or not writable (probed with a real temporary file)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise CheckpointError(f"cannot save to {path}: {e.strerror}") from None
    if mode is not None:
        if stat.S_ISLNK(mode):
            raise CheckpointError(f"cannot save to {path}: it is a symbolic link (give the real path)")
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"cannot save to {path}: it is a directory (give a file name)")
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"cannot save to {path}: it is not a regular file (a device, pipe or socket)")
    folder = path.parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot save to {path}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CheckpointError(f"cannot save to {path}: folder {folder} is not writable ({e.strerror})") from None


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _stale_temps(path: Path) -> Iterator[Path]:
    """Temporary files of earlier writes to ``path`` whose writer process is gone (killed mid-write)."""
    for tmp in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        try:
            pid = int(tmp.name[len(_temp_prefix(path)):].split(".", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            yield tmp
        except PermissionError:  # alive, another user's
            pass


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a unique temporary file next to ``path``, fsync it, rename it over ``path``.

    The temporary name carries this process's id, so two runs never share one, and a later write
    removes the leftovers of writers that died (SIGKILL) mid-write. Any failure removes this
    write's temporary file and becomes a CheckpointError naming ``path``; the previous file stays.
    """
    path = Path(path)
    check_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make the checkpoint private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot save to {path}: {e.strerror or e}") from None
        raise
    with contextlib.suppress(OSError):  # the rename itself durable; not every file system allows this
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    for stale in _stale_temps(path):
        with contextlib.suppress(OSError):
            stale.unlink()


def resume_path(checkpoint_dir: str | os.PathLike, epoch: int, suffix: str) -> Path:
    """``DIR/epoch-0002<suffix>``: the checkpoint written after ``epoch`` epochs."""
    return Path(checkpoint_dir) / (RESUME_NAME.format(epoch=epoch) + suffix)


def latest_resume_path(checkpoint_dir: str | os.PathLike, suffix: str) -> Path:
    """The checkpoint of the highest epoch in ``checkpoint_dir``; CheckpointError if there is none."""
    found = []
    for p in Path(checkpoint_dir).glob(f"epoch-*{suffix}"):
        number = p.name[len("epoch-"):-len(suffix)]
        if number.isdigit():
            found.append((int(number), p))
    if not found:
        raise CheckpointError(f"--resume: no checkpoint (epoch-NNNN{suffix}) in {checkpoint_dir}")
    return max(found)[1]


def _differs(saved: Mapping[str, object], current: Mapping[str, object], fields: tuple[str, ...],
             made: str) -> str | None:
    """What the first of ``fields`` (then the data's identity, where ``current`` has one) differing
    between ``saved`` and ``current`` says, naming its flag; None if they agree."""
    for name in fields:
        if name not in saved:
            return f"{made} has no field {name}"
        a, b = saved[name], current[name]
        if isinstance(b, tuple):
            a = tuple(a) if isinstance(a, list) else a
        if a != b:
            return f"--{name.replace('_', '-')} is {b!r} but {made} with {a!r}"
    if DATA_FIELD in current and saved.get(DATA_FIELD) != current[DATA_FIELD]:
        if DATA_FIELD not in saved:
            return f"{made} without a record of its data (an older version): its data cannot be checked"
        return (f"--data-dir {current.get('data_dir', '')!r} holds other data (sha256 {str(current[DATA_FIELD])[:12]}...) "
                f"than {made} with (sha256 {str(saved[DATA_FIELD])[:12]}...)")
    return None


def check_config(saved: Mapping[str, object], current: Mapping[str, object], fields: tuple[str, ...], source: str) -> None:
    """Raise CheckpointError naming the first of ``fields`` where the checkpoint's config differs, and
    the data, where ``current`` carries its identity (DATA_FIELD) and the checkpoint another."""
    why = _differs(saved, current, fields, "the checkpoint was made")
    if why:
        raise CheckpointError(f"{source}: {why}")


def check_resume_epochs(first_epoch: int, epochs: int, source: str | os.PathLike) -> None:
    """``--epochs`` counts from the start of the run: a checkpoint past it would save a longer-trained model."""
    if first_epoch > epochs:
        raise CheckpointError(f"{source}: --epochs {epochs} but this checkpoint was written after epoch {first_epoch} "
                              f"(give --epochs {first_epoch} or more, or another --checkpoint-dir)")


def _own_file(path: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> bool:
    """Whether ``path`` is a resume checkpoint or record of the folder ``checkpoint_dir``."""
    name = Path(path).name
    same = Path(path).resolve().parent == Path(checkpoint_dir).resolve()
    return same and (bool(_CHECKPOINT_NAME.fullmatch(name)) or name in (RUN_FILE, LOCK_FILE))


def check_outputs(save: str, load: str, checkpoint_dir: str, resume: bool) -> None:
    """Before any work, both quickstarts: the save target and the checkpoint folder must be writable,
    so a run's work is never lost at the end, and the save must not replace one of the folder's own
    resume checkpoints (CheckpointError otherwise)."""
    if save and not load:
        check_target(save)
        if checkpoint_dir and _own_file(save, checkpoint_dir):
            raise CheckpointError(f"--save {save}: is a file of this run's --checkpoint-dir {checkpoint_dir} "
                                  "(saving there would replace a resume checkpoint); give another path")
    if checkpoint_dir:
        prepare_checkpoint_dir(checkpoint_dir)
    elif resume:
        raise CheckpointError("--resume needs --checkpoint-dir DIR (the folder holding the checkpoints)")


# Locks this process holds, by folder: a second run in the same process (a test, a notebook) reuses its own.
_LOCKS: dict[Path, int] = {}


def _lock(folder: Path) -> None:
    key = folder.resolve()
    if key in _LOCKS:
        return
    lock = folder / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CheckpointError(f"--checkpoint-dir {folder}: cannot create {lock} ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise CheckpointError(f"--checkpoint-dir {folder}: another run (pid {holder}) is writing there; "
                              "a checkpoint folder belongs to one run (give another folder)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[key] = fd  # held until this process ends: the kernel drops it even on SIGKILL


def claim_checkpoint_dir(checkpoint_dir: str | os.PathLike, config: Mapping[str, object]) -> None:
    """Make ``checkpoint_dir`` this run's, before its first epoch: lock it against a second writer,
    and refuse it if it holds checkpoints of a run with other RESUME_FIELDS or other data
    (``config[DATA_FIELD]``), naming the flag; else record this run's in RUN_FILE."""
    folder = Path(checkpoint_dir)
    _lock(folder)
    record = folder / RUN_FILE
    mine = {name: list(v) if isinstance(v, tuple) else v for name, v in config.items()
            if name in RESUME_FIELDS or name == DATA_FIELD}
    held = [p.name for p in folder.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name)]
    if held:
        made = f"its checkpoints ({sorted(held)[-1]}, ...) were made"
        if not record.exists():
            raise CheckpointError(f"--checkpoint-dir {folder}: holds checkpoints but no {RUN_FILE} (written by an "
                                  "older version): its run cannot be checked; give another folder")
        try:
            saved = json.loads(read_file(record))
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            raise CheckpointError(f"--checkpoint-dir {folder}: {record} is not a run record (JSON object)")
        why = _differs(saved, config, RESUME_FIELDS, made)
        if why:
            raise CheckpointError(f"--checkpoint-dir {folder} belongs to another run: {why}; "
                                  "give another folder (or the same flags)")
        if saved == mine:
            return
    atomic_write(record, lambda f: f.write((json.dumps(mine, sort_keys=True) + "\n").encode()))


def prepare_checkpoint_dir(checkpoint_dir: str | os.PathLike) -> None:
    """Create ``checkpoint_dir`` (its parent must exist) and check it is writable, before training."""
    folder = Path(checkpoint_dir)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise CheckpointError(f"--checkpoint-dir {folder}: exists and is not a directory")
    if not folder.parent.is_dir():
        raise CheckpointError(f"--checkpoint-dir {folder}: folder {folder.parent} does not exist")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"--checkpoint-dir {folder}: cannot create ({e.strerror})") from None
    check_target(folder / "probe")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


def add_checkpoint_flags(p: argparse.ArgumentParser) -> None:
    """The checkpoint flags both quickstarts add to ``quickstart_parity_common.cli.base_parser``."""
    # The names are quickstart_parity_common.models' (numpy only), so the flags parse before torch or JAX is
    # imported; each side's registry.MODELS holds the same names.
    p.add_argument("--model", default="mlp", choices=MODEL_NAMES, help=model_help())
    p.add_argument("--checkpoint-dir", default="", help="write a resumable checkpoint here after every epoch ('' for none)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--load", default="", help="evaluate and predict with this saved model instead of training")
    p.add_argument("--limit-train", type=non_negative_int, default=0,
                   help="train on the first N training images only (0: all)")


def check_limit(limit_train: int, size: int) -> None:
    """``--limit-train N`` must fit the training set (DataError otherwise)."""
    if limit_train > size:
        raise DataError(f"--limit-train {limit_train}: the training set has only {size} images")


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a safetensors file, through ``safetensors.numpy`` (no framework).

    Any parse failure, or a dtype numpy lacks (bfloat16), is a CheckpointError naming the file.
    """
    data = read_file(path)
    try:
        arrays = safetensors.numpy.load(data)
        size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except Exception as e:  # noqa: BLE001 - untrusted bytes: the parser fails in several unrelated types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({first})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: safetensors metadata is not a mapping")
    return arrays, metadata


def safetensors_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file of ``arrays`` whose metadata carries their ``digest``."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return safetensors.numpy.save(arrays, metadata={**metadata, DIGEST_KEY: digest(arrays)})


def save_final(save: Callable[[Path], None], path: str | os.PathLike, last_checkpoint: str | os.PathLike | None) -> None:
    """``save(path)``, the end of a training run; if it fails (disk full, ``ulimit -f``, EFBIG), one
    CheckpointError saying where the trained weights still are: the run's last resume checkpoint
    (``--resume`` with the same flags saves it again, training nothing), else a copy written to the
    system's temporary folder, else that they are lost."""
    try:
        save(Path(path))
        return
    except CheckpointError as e:
        failure = str(e)
    if last_checkpoint:
        raise CheckpointError(f"{failure}; the trained weights are kept in {last_checkpoint}: free space, then rerun "
                              "the same command with --resume to save them")
    rescue = Path(tempfile.gettempdir()) / f"{Path(path).stem}.rescued-{os.getpid()}{Path(path).suffix}"
    try:
        save(rescue)
    except CheckpointError as e:
        why = str(e).rsplit(": ", 1)[-1]
        raise CheckpointError(f"{failure}; the trained weights are lost (a copy to {rescue} failed too: {why}); "
                              "rerun with --checkpoint-dir DIR to keep every epoch") from None
    raise CheckpointError(f"{failure}; the trained weights were saved to {rescue} instead")
