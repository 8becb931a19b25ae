"""Small reference classifiers used by the demo, tests and benchmarks."""
from __future__ import annotations

from torch import nn


def mlp(in_features: int = 64, hidden: int = 256, num_classes: int = 10) -> nn.Module:
    """Two-hidden-layer MLP over flattened inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32, image_size: int = 28) -> nn.Module:
    """Two conv blocks and a two-layer head (about 0.4M parameters at 28x28)."""
    s = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * s * s, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )
