"""A small encoder-decoder segmenter with three classic architecture bugs.

Run ``archlint examples/segmenter.py`` to see them reported, without the model ever running:

* the decoder's transposed conv has kernel 3 and stride 2 (checkerboard artifacts), and without
  ``output_padding`` it gives 61x61 where the 62x62 skip needs 62: the ``torch.cat`` fails;
* the quality head flattens a fixed 31x31 grid into a Linear layer, so it only works at one
  resolution.
"""

import torch
from torch import nn


class Segmenter(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
        )
        self.down = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.body = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1)
        self.fuse = nn.Conv2d(64, 32, 3, padding=1)
        self.seg = nn.Conv2d(32, classes, 1)
        self.quality = nn.Linear(64 * 31 * 31, 1)

    def forward(self, x):
        skip = self.stem(x)
        x = self.body(self.down(skip))
        score = self.quality(torch.flatten(x, 1))
        x = torch.cat([self.up(x), skip], dim=1)
        return self.seg(self.fuse(x)), score


example_input = torch.zeros(1, 3, 64, 64)
