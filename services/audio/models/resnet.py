"""The audio classifier network: a small ResNet over one-channel log-mel spectrograms.

Defined here rather than taken from torchvision so the audio image needs only torch (whose
CPU build is a few hundred MB, where torchvision ties torch to a CUDA build on PyPI). Module
and parameter names follow torchvision's ResNet, so a state dict saved by either loads in both.
"""

from __future__ import annotations

from typing import Any

RESNET_LAYERS = (1, 1, 1, 1)
"""Residual blocks per stage: a ResNet-10. Deeper (ResNet-18 is 2, 2, 2, 2) did not help on
the starter set and doubles CPU time per clip."""

STAGE_CHANNELS = (64, 128, 256, 512)


def build_resnet(num_labels: int, layers: tuple[int, int, int, int] = RESNET_LAYERS) -> Any:
    """A randomly initialised ResNet whose stem reads one channel (the spectrogram).

    Global average pooling at the end makes it accept clips of any length.
    """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """Two 3x3 convolutions with a shortcut; the shortcut projects when the shape changes."""

        def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.downsample: nn.Module | None = None
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            shortcut = inputs if self.downsample is None else self.downsample(inputs)
            hidden = self.relu(self.bn1(self.conv1(inputs)))
            output: torch.Tensor = self.relu(self.bn2(self.conv2(hidden)) + shortcut)
            return output

    class SpectrogramResNet(nn.Module):
        """Stem, four residual stages, global average pooling and a linear classifier."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            in_channels = 64
            stages = []
            for index, (blocks, channels) in enumerate(zip(layers, STAGE_CHANNELS, strict=True)):
                stride = 1 if index == 0 else 2
                stage = []
                for block in range(blocks):
                    stage.append(BasicBlock(in_channels, channels, stride if block == 0 else 1))
                    in_channels = channels
                stages.append(nn.Sequential(*stage))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(STAGE_CHANNELS[-1], num_labels)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            hidden = self.maxpool(self.relu(self.bn1(self.conv1(inputs))))
            hidden = self.layer4(self.layer3(self.layer2(self.layer1(hidden))))
            logits: torch.Tensor = self.fc(torch.flatten(self.avgpool(hidden), 1))
            return logits

    return SpectrogramResNet()
