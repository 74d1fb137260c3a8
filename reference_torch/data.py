"""FashionMNIST through torchvision, as the tutorial loads it (``ToTensor``, ``DataLoader(batch_size=64)``)."""
from __future__ import annotations

import contextlib
import socket
import sys

from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from common.data import CLASSES, DataError, materialize_raw, missing_data_message

__all__ = ["CLASSES", "DataError", "get_datasets", "get_dataloaders"]

DOWNLOAD_TIMEOUT_S = 30


def _download(data_dir: str) -> None:
    """torchvision's download, the third way to get the data; any failure becomes DataError."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a closed network must fail, not hang
    try:
        # torchvision reports its progress on stdout; keep stdout for the tutorial's lines.
        with contextlib.redirect_stdout(sys.stderr):
            for train in (True, False):
                datasets.FashionMNIST(root=data_dir, train=train, download=True)
    except Exception as e:  # noqa: BLE001 - every failure of the download means the same to the user
        raise DataError(f"{missing_data_message(data_dir)} (download failed: {type(e).__name__}: {e})") from None
    finally:
        socket.setdefaulttimeout(old)


def get_datasets(data_dir: str = "data", download: bool = True) -> tuple[datasets.FashionMNIST, datasets.FashionMNIST]:
    """The tutorial's ``training_data`` and ``test_data`` (ToTensor transform).

    The files are found as DESIGN.md says (data folder, Debian's folder, torchvision's download)
    and validated first, so a corrupt file is a DataError naming it, not a reshape error.
    """
    try:
        materialize_raw(data_dir)
    except DataError as e:
        if not download or not str(e).startswith("FashionMNIST not found"):
            raise
        _download(data_dir)
        materialize_raw(data_dir)
    training_data = datasets.FashionMNIST(root=data_dir, train=True, download=False, transform=ToTensor())
    test_data = datasets.FashionMNIST(root=data_dir, train=False, download=False, transform=ToTensor())
    return training_data, test_data


def get_dataloaders(training_data, test_data, batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The tutorial's loaders: no shuffle, the last partial batch kept."""
    return DataLoader(training_data, batch_size=batch_size), DataLoader(test_data, batch_size=batch_size)
