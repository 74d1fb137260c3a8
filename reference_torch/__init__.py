"""The canonical PyTorch quickstart (FashionMNIST, MLP 784-512-512-10, SGD), faithful to the tutorial."""
