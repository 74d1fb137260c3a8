"""The JAX side's pixels are torchvision's ToTensor output, bit for bit, for all 70,000 images."""
import numpy as np
import torch
from torchvision import datasets
from torchvision.transforms import ToTensor

from jax_impl.data import load_fashion_mnist
from quickstart_parity_common.data import to_float
from reference_torch.data import get_datasets


def test_all_70000_images_bit_identical_to_totensor(data_dir):
    training_data, test_data = get_datasets(data_dir, download=False)
    for train, ds in ((True, training_data), (False, test_data)):
        images, labels = load_fashion_mnist(data_dir, train)
        ours = to_float(images)  # (N, 28, 28) float32
        assert isinstance(ds, datasets.FashionMNIST) and isinstance(ds.transform, ToTensor)
        assert len(ds) == len(images) == (60_000 if train else 10_000)
        # ToTensor per sample, exactly as the DataLoader would call it (PIL image -> tensor).
        theirs = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()  # (N, 1, 28, 28)
        assert theirs.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), theirs[:, 0].view(np.uint32)), f"train={train}: pixels differ"
        np.testing.assert_array_equal(labels, ds.targets.numpy())
