"""FashionMNIST through torchvision, as the tutorial loads it (``ToTensor``, ``DataLoader(batch_size=64)``)."""
from __future__ import annotations

import sys

from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

from quickstart_parity_common.checkpoint import check_limit
from quickstart_parity_common.data import CLASSES, DataError, download_torchvision, prepare

__all__ = ["CLASSES", "DataError", "get_dataloaders", "get_datasets"]


def get_datasets(data_dir: str = "data", download: bool = True, limit_train: int = 0):
    """The tutorial's ``training_data`` and ``test_data`` (ToTensor transform); with ``limit_train``
    the training set is its first ``limit_train`` images.

    The files are found as docs/design.md says (data folder, Debian's folder, torchvision's
    download unless ``download`` is False; ``quickstart_parity_common.data.prepare``) and validated first, so a
    corrupt file is a DataError naming it, not a reshape error.
    """
    # Progress goes to stderr: stdout is the tutorial's lines.
    prepare(data_dir, ways=(download_torchvision,) if download else (), log=lambda m: print(m, file=sys.stderr))
    training_data = datasets.FashionMNIST(root=data_dir, train=True, download=False, transform=ToTensor())
    test_data = datasets.FashionMNIST(root=data_dir, train=False, download=False, transform=ToTensor())
    if limit_train:
        check_limit(limit_train, len(training_data))
        training_data = Subset(training_data, range(limit_train))
    return training_data, test_data


def get_dataloaders(training_data, test_data, batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The tutorial's loaders: no shuffle, the last partial batch kept."""
    return DataLoader(training_data, batch_size=batch_size), DataLoader(test_data, batch_size=batch_size)
