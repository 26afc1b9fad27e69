"""An independent re-implementation of the official PCNN forward pass, written from
../shared/docs/pcnn-reference.md (key names, crops, MDIM steps), used only to check checkpoint import parity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class OfficialLayoutPCNN(nn.Module):
    """Seven torchvision ResNet-18s (resnet4 unused) wired and named like the official model."""

    def __init__(self, num_classes: int = 7, h1: float = 0.5) -> None:
        super().__init__()
        self.h1 = h1
        self.resnet = torchvision.models.resnet18()
        for i in range(1, 7):
            setattr(self, f"resnet{i}", torchvision.models.resnet18())
        pairs = {"features1": "resnet", "features2": "resnet1", "features3": "resnet2", "features4": "resnet3",
                 "features6": "resnet5", "features7": "resnet6"}
        for feat, res in pairs.items():
            setattr(self, feat, nn.Sequential(*list(getattr(self, res).children())[:-3]))
        self.features8 = nn.Sequential(self.resnet.layer4)
        self.fc_loc = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Linear(32, 6))
        self.fc = nn.Linear(512, num_classes)
        for name in ("fc2", "fc3", "fc4", "fc6", "fc7"):
            setattr(self, name, nn.Linear(256, num_classes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = x.shape[-2:]
        r1, r2, c1 = int(H * self.h1), int(H * 0.65), int(W * 0.5)
        g = self.features1(x)
        x2 = self.features2(x[:, :, :r1, :c1])
        x3 = self.features3(x[:, :, :r1, c1:])
        x4 = self.features4(x[:, :, r1:r2, :c1])
        x6 = self.features6(x[:, :, r1:r2, c1:])
        x7 = self.features7(x[:, :, r2:, :])
        gw = g.shape[3]

        def width(t):
            return F.interpolate(t, size=(t.shape[2], gw), mode="bilinear", align_corners=True)

        top, mid, bot = width(torch.cat([x2, x3], 3)), width(torch.cat([x4, x6], 3)), width(x7)
        stitched = F.interpolate(torch.cat([top, mid, bot], 2), size=g.shape[-2:], mode="bilinear",
                                 align_corners=True)
        theta = self.fc_loc(self.features8(stitched).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(g.shape), align_corners=True)
        fused = g + F.grid_sample(stitched, grid, align_corners=True)
        out = self.fc(self.avgpool(self.features8(fused)).flatten(1))
        heads = sum(getattr(self, f)(self.avgpool(m).flatten(1)) for f, m in
                    zip(("fc2", "fc3", "fc4", "fc6", "fc7"), (x2, x3, x4, x6, x7)))
        return out, heads
