"""Shared test helpers: small IDX files written by the tests, and running the CLIs."""
from __future__ import annotations

import gzip
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from quickstart_parity_common.data import DEBIAN_DIR, FILES, DataError, find_files

REPO = Path(__file__).resolve().parents[1]
K = TypeVar("K")
T = TypeVar("T")


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX payload of ``array``."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_tiny_dataset(data_dir: Path, n_train: int = 200, n_test: int = 50, gz: bool = False, seed: int = 0) -> Path:
    """A small, valid FashionMNIST-shaped data set in ``data_dir/FashionMNIST/raw``; returns that folder."""
    rng = np.random.default_rng(seed)
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = FILES[train]
        for name, arr in ((images, rng.integers(0, 256, (n, 28, 28))), (labels, rng.integers(0, 10, (n,)))):
            data = idx_bytes(arr)
            if gz:
                with gzip.open(raw / f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                (raw / name).write_bytes(data)
    return raw


def real_data_dir() -> str | None:
    """``data`` if the real set is reachable from it (its raw folder or Debian's), else None."""
    try:
        find_files(REPO / "data", DEBIAN_DIR)
    except DataError:
        return None
    return str(REPO / "data")


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """``python -m module args...`` in a subprocess; returns the CompletedProcess (text)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=full_env, timeout=timeout)


def at_once(calls: Mapping[K, Callable[[], T]], workers: int = 2) -> dict[K, T]:
    """Each call's result, ``workers`` calls running at a time (in ``calls``' order). For independent
    subprocesses: each mostly keeps one core busy (imports, compiling), so two fill this machine."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = {key: pool.submit(call) for key, call in calls.items()}
        return {key: job.result() for key, job in jobs.items()}


# The tutorial's output, line by line, for one epoch (numbers free, format exact).
LOSS = r"loss: \d\.\d{6}  \[ {0,4}\d{1,5}/60000\]"
ONE_EPOCH = re.compile(
    r"Using cpu device\n"
    r"Epoch 1\n-------------------------------\n"
    + "".join(LOSS + r"\n" for _ in range(10))
    + r"Test Error: \n Accuracy: (?P<acc>\d{1,3}\.\d)%, Avg loss: (?P<loss>\d\.\d{6}) \n\n"
    r"Done!\n"
    r"Saved PyTorch Model State to (?P<path>\S+)\n"
    r"Loaded PyTorch Model State from (?P=path)\n"
    r'Predicted: "(?P<pred>[^"]+)", Actual: "Ankle boot"\n$'
)


def run_in_process(module: str, args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m module args``, run in this process."""
    import torch  # noqa: PLC0415 -- only here: the data-writing helpers stay numpy-only

    main = importlib.import_module(f"{module}.__main__").main
    with torch.random.fork_rng():  # a run seeds torch's global generator: leave this process's as it was
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code
    out, err = capsys.readouterr()
    return code, out, err
