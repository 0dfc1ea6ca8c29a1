"""Small models that exercise every op kind the torch frontend normalizes.

tests/test_torch_frontend.py checks each model's shapes against a real CPU forward.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Windows(nn.Module):
    """Sliding windows: strides, dilation, 'same' with an even kernel, ceil_mode, output_padding."""

    def __init__(self):
        super().__init__()
        self.same_even = nn.Conv2d(3, 4, 4, padding="same")
        self.dilated = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2)
        self.valid = nn.Conv2d(4, 4, (3, 5), padding="valid")
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.lp = nn.LPPool2d(2, 2)

    def forward(self, x):
        x = self.same_even(x)
        x = self.dilated(x)
        x = self.valid(x)
        x = self.pool(x)
        x = self.avg(x)
        x = self.up(x)
        x = self.reflect(x)
        x = F.max_pool2d(x, 2, ceil_mode=True)
        x = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return self.lp(x)


class Resizing(nn.Module):
    """Upsampling, padding, cropping, pixel shuffle, adaptive pools and merges."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.pad = nn.ZeroPad2d((1, 0, 2, 0))
        self.reflect = nn.ReflectionPad2d(1)
        self.shuffle = nn.PixelShuffle(2)
        self.unshuffle = nn.PixelUnshuffle(2)
        self.adaptive = nn.AdaptiveAvgPool2d((5, None))

    def forward(self, x):
        y = self.up(self.conv(x))
        y = F.interpolate(y, size=x.shape[2:], mode="nearest")
        y = self.pad(y)[:, :, 2:, 1:]
        y = F.pad(y, (1, 2, 3, 4))
        y = y[..., 3:-4, 1:-2]
        y = self.reflect(y)[:, :, 1:-1, 1:-1]
        z = self.unshuffle(self.shuffle(y))
        a, b = torch.chunk(z, 2, dim=1)
        m = a * b + a - b
        m = torch.cat([m, y], dim=1)
        return self.adaptive(m)


class Head(nn.Module):
    """Global pooling, flatten, view and linear layers."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)
        self.fc2 = nn.Linear(10 + 16, 4)

    def forward(self, x):
        f = self.features(x)
        g = f.mean((2, 3))
        h = self.fc(self.flatten(self.gap(f)))
        k = torch.flatten(f.amax(dim=(-2, -1), keepdim=True), 1)
        v = torch.cat([h, g + k], dim=1).view(x.size(0), -1)
        return self.fc2(F.dropout(v, 0.1, training=self.training))


class Sequence(nn.Module):
    """A 1-d conv stack and a recurrent layer whose tuple output is unpacked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 5, stride=2, padding=2)
        self.norm = nn.GroupNorm(2, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)

    def forward(self, x):
        y = F.gelu(self.norm(self.conv(x)))
        y = F.max_pool1d(y, 2)
        out, (h, c) = self.lstm(y.transpose(1, 2))
        return out.permute(0, 2, 1).contiguous(), h
