"""The audio classifier network: a torchvision ResNet over one-channel log-mel spectrograms."""

from __future__ import annotations

from typing import Any

RESNET_LAYERS = (1, 1, 1, 1)
"""Residual blocks per stage: a ResNet-10. Deeper (ResNet-18 is 2, 2, 2, 2) did not help on
the starter set and doubles CPU time per clip."""


def build_resnet(num_labels: int, layers: tuple[int, int, int, int] = RESNET_LAYERS) -> Any:
    """A randomly initialised ResNet whose stem reads one channel (the spectrogram).

    Global average pooling at the end makes it accept clips of any length.
    """
    import torch
    from torchvision.models.resnet import BasicBlock, ResNet

    network = ResNet(BasicBlock, list(layers), num_classes=num_labels)
    network.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return network
