"""Learnable texture extractor (LTE): the first VGG19 layers, trained end to end."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MeanShift(nn.Module):
    """(x − mean) / std as a fixed 1×1 convolution, stored as ``weight``/``bias`` buffers.

    Buffers (not parameters) keep it out of the optimiser while still loading the authors'
    ``LTE.sub_mean.weight/bias`` keys.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        std_t = torch.tensor(std)
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1) / std_t.view(3, 1, 1, 1))
        self.register_buffer("bias", -torch.tensor(mean) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class LTE(nn.Module):
    """Texture features at relu1_1 (full size), relu2_1 (½) and relu3_1 (¼).

    Submodule indices follow VGG19's ``features`` so the authors' keys (``slice2.5`` = conv2_1 …)
    load unchanged.
    """

    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, c1, 3, padding=1))  # conv1_1
        self.slice1.add_module("1", nn.ReLU(inplace=True))
        self.slice2 = nn.Sequential()
        self.slice2.add_module("2", nn.Conv2d(c1, c1, 3, padding=1))  # conv1_2
        self.slice2.add_module("3", nn.ReLU(inplace=True))
        self.slice2.add_module("4", nn.MaxPool2d(2, 2))
        self.slice2.add_module("5", nn.Conv2d(c1, c2, 3, padding=1))  # conv2_1
        self.slice2.add_module("6", nn.ReLU(inplace=True))
        self.slice3 = nn.Sequential()
        self.slice3.add_module("7", nn.Conv2d(c2, c2, 3, padding=1))  # conv2_2
        self.slice3.add_module("8", nn.ReLU(inplace=True))
        self.slice3.add_module("9", nn.MaxPool2d(2, 2))
        self.slice3.add_module("10", nn.Conv2d(c2, c3, 3, padding=1))  # conv3_1
        self.slice3.add_module("11", nn.ReLU(inplace=True))
        self.sub_mean = MeanShift()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) in [-1, 1] → lv1 (N, c1, H, W), lv2 (N, c2, H/2, W/2), lv3 (N, c3, H/4, W/4)."""
        x = self.sub_mean((x + 1.0) / 2.0)
        lv1 = self.slice1(x)
        lv2 = self.slice2(lv1)
        lv3 = self.slice3(lv2)
        return lv1, lv2, lv3
