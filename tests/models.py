"""Small, seeded, randomly initialised models used by the gradvis_export tests.

Every factory seeds torch itself, builds the model on CPU, puts it in eval mode
and returns a :class:`ModelSpec` ``(model, input_shape, target_layer, relu_only)``:

* ``model``        -- ``nn.Module`` in eval mode (random weights, never downloaded)
* ``input_shape``  -- shape of a test input batch, ``(B, C, H, W)`` or ``(B, C, T, H, W)``
* ``target_layer`` -- dotted module name of the layer used for Grad-CAM
* ``relu_only``    -- True if the only activations in the net are ReLUs, i.e.
  guided backprop with ``activations="relu"`` and ``activations="all"`` coincide

BatchNorm running statistics and affine parameters are randomised so that the
eval-mode BN layers are not identities and the activation patterns are less
degenerate than those of a freshly initialised network.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class ModelSpec(NamedTuple):
    model: nn.Module
    input_shape: tuple[int, ...]
    target_layer: str
    relu_only: bool


def make_input(shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Fresh float32 standard-normal input of ``shape`` from its own generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen) * scale


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)


def _finish(model: nn.Module, seed: int) -> nn.Module:
    _randomise_batchnorm(model, seed)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


# --------------------------------------------------------------------------- #
# torchvision image classifiers
# --------------------------------------------------------------------------- #
def resnet18(seed: int = 0) -> ModelSpec:
    """torchvision resnet18, 10 classes; nn.ReLU(inplace=True), reused per block."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    return ModelSpec(_finish(model, seed), (2, 3, 64, 64), "layer4", True)


def vgg11_bn(seed: int = 0) -> ModelSpec:
    """torchvision VGG with the vgg11_bn feature extractor and a reduced head.

    The stock classifier (25088 -> 4096 -> 4096 -> n) has ~120M parameters and
    makes every test take seconds, so the 7x7 adaptive pool + classifier are
    swapped for a 1x1 adaptive pool and a 512 -> 128 -> 128 -> 10 MLP with the
    same layer pattern (Linear, ReLU(inplace), Dropout, ...).  The big head is
    built on the meta device so it never costs real memory or init time.

    Target layer ``features.27`` is the last ReLU (inplace) of the conv stack,
    output (B, 512, 4, 4) for a 64x64 input (``features.28`` is the final
    max-pool, 2x2).
    """
    from torchvision.models.vgg import VGG, cfgs, make_layers

    torch.manual_seed(seed)
    features = make_layers(cfgs["A"], batch_norm=True)
    with torch.device("meta"):
        model = VGG(features, num_classes=10, init_weights=False)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(
        nn.Linear(512, 128),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(128, 128),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(128, 10),
    )
    for m in model.features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    assert not any(p.is_meta for p in model.parameters())
    return ModelSpec(_finish(model, seed), (2, 3, 64, 64), "features.27", True)


def mobilenet_v3_small(seed: int = 0) -> ModelSpec:
    """ReLU + Hardswish (inplace) + SE blocks gated by Hardsigmoid.

    ``features.12`` is the last Conv2dNormActivation (576 ch, 2x2 at 64x64).
    """
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    return ModelSpec(_finish(model, seed), (2, 3, 64, 64), "features.12", False)


def efficientnet_b0(seed: int = 0) -> ModelSpec:
    """SiLU (inplace) everywhere + SE blocks gated by Sigmoid.

    ``features.8`` is the final 1x1 Conv2dNormActivation (1280 ch, 2x2 at 64x64).
    """
    torch.manual_seed(seed)
    model = torchvision.models.efficientnet_b0(weights=None, num_classes=10)
    return ModelSpec(_finish(model, seed), (2, 3, 64, 64), "features.8", False)


# --------------------------------------------------------------------------- #
# pytorchvideo video classifiers
# --------------------------------------------------------------------------- #
def x3d(seed: int = 0) -> ModelSpec:
    """pytorchvideo X3D (ReLU, custom-autograd Swish, SE with Sigmoid).

    ``blocks.4`` is the last res stage, output (B, 192, 4, 2, 2).
    """
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_x3d(
            input_clip_length=4,
            input_crop_size=64,
            model_num_class=5,
            head_activation=None,
        )
    return ModelSpec(_finish(model, seed), (2, 3, 4, 64, 64), "blocks.4", False)


def slow_resnet(seed: int = 0) -> ModelSpec:
    """Tiny "slow_r50"-style pytorchvideo ResNet (3D bottlenecks, ReLU only).

    stem_dim_out=8 keeps it at ~0.5M params.  Spatial strides are reduced so
    that ``blocks.4`` (last res stage) still has a 4x4x4 output for a
    4x32x32 clip: output (B, 256, 4, 4, 4).
    """
    from pytorchvideo.models.resnet import create_resnet

    torch.manual_seed(seed)
    model = create_resnet(
        input_channel=3,
        model_depth=50,
        model_num_class=6,
        dropout_rate=0.0,
        stem_dim_out=8,
        stage_spatial_h_stride=(1, 2, 1, 1),
        stage_spatial_w_stride=(1, 2, 1, 1),
        head_pool_kernel_size=(4, 4, 4),
        head_activation=None,
    )
    return ModelSpec(_finish(model, seed), (2, 3, 4, 32, 32), "blocks.4", True)


# --------------------------------------------------------------------------- #
# small custom net with every spelling of ReLU
# --------------------------------------------------------------------------- #
class MixedReLUNet(nn.Module):
    """conv/bn/pool/linear net that spells its ReLUs in many different ways.

    ``spelling="mixed"`` uses nn.ReLU(inplace=True), F.relu, F.relu(inplace=True),
    torch.relu, torch.relu_ and ``Tensor.relu_()`` whose return value is
    ignored (so the in-place mutation really matters).  ``spelling="modules"``
    builds a numerically identical twin (same parameters, same registration
    order) in which every ReLU is a separate out-of-place nn.ReLU module -- the
    only form that captum's GuidedBackprop can see.
    """

    def __init__(self, num_classes: int = 7, spelling: str = "mixed"):
        super().__init__()
        assert spelling in ("mixed", "modules")
        self.spelling = spelling
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU(inplace=True) if spelling == "mixed" else nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        # target layer: a Sequential ending in an (inplace) ReLU module
        self.block = nn.Sequential(
            nn.Conv2d(16, 24, 3, padding=1),
            nn.BatchNorm2d(24),
            nn.ReLU(inplace=True) if spelling == "mixed" else nn.ReLU(),
        )
        self.conv5 = nn.Conv2d(24, 32, 3, padding=1)
        self.bn5 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32, 24)
        self.fc2 = nn.Linear(24, num_classes)
        if spelling == "modules":
            self.r2, self.r3, self.r4, self.r5, self.r6 = (nn.ReLU() for _ in range(5))

    def forward(self, x):
        if self.spelling == "modules":
            return self._forward_modules(x)
        x = self.pool(self.act1(self.bn1(self.conv1(x))))  # nn.ReLU(inplace=True)
        x = F.relu(self.bn2(self.conv2(x)))  # functional
        y = self.bn3(self.conv3(x))
        y.relu_()  # Tensor.relu_, result ignored on purpose
        x = torch.relu(x + y)  # torch.relu
        z = self.block(x)  # Sequential ending in nn.ReLU(inplace=True)
        z = torch.relu_(self.bn5(self.conv5(z)))  # torch.relu_
        z = F.adaptive_avg_pool2d(z, 1).flatten(1)
        z = F.relu(self.fc1(z), inplace=True)  # functional in-place
        return self.fc2(z)

    def _forward_modules(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.r2(self.bn2(self.conv2(x)))
        y = self.r3(self.bn3(self.conv3(x)))
        x = self.r4(x + y)
        z = self.block(x)
        z = self.r5(self.bn5(self.conv5(z)))
        z = F.adaptive_avg_pool2d(z, 1).flatten(1)
        z = self.r6(self.fc1(z))
        return self.fc2(z)


def mixed_relu_net(seed: int = 0, spelling: str = "mixed") -> ModelSpec:
    """Custom functional/in-place ReLU net; ``block`` output is (B, 24, 8, 8)."""
    torch.manual_seed(seed)
    model = MixedReLUNet(spelling=spelling)
    return ModelSpec(_finish(model, seed), (2, 3, 32, 32), "block", True)


# --------------------------------------------------------------------------- #
# a SlowFast-style two-pathway net (a list of two clips in)
# --------------------------------------------------------------------------- #
class TwoPathwayNet(nn.Module):
    """SlowFast in miniature: a slow pathway (2 frames, wide) and a fast one (8 frames, thin),
    a time-strided lateral convolution from fast to slow, and a head on both pooled."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.slow = nn.Sequential(
            nn.Conv3d(3, 16, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(16), nn.ReLU()
        )
        self.fast = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.lateral = nn.Conv3d(4, 8, (5, 1, 1), stride=(4, 1, 1), padding=(2, 0, 0))
        self.slow2 = nn.Sequential(
            nn.Conv3d(24, 16, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.ReLU()
        )
        self.fast2 = nn.Sequential(nn.Conv3d(4, 4, 3, stride=(1, 2, 2), padding=1), nn.ReLU())
        self.head = nn.Linear(20, classes)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        slow, fast = x
        s, f = self.slow(slow), self.fast(fast)
        s = self.slow2(torch.cat([s, self.lateral(f)], dim=1))
        f = self.fast2(f)
        return self.head(torch.cat([s.mean((2, 3, 4)), f.mean((2, 3, 4))], dim=1))


def two_pathway(seed: int = 0) -> ModelSpec:
    """TwoPathwayNet on [slow (B,3,2,32,32), fast (B,3,8,32,32)]; ``fast2`` is the fast
    pathway's last map (B, 4, 8, 16, 16)."""
    torch.manual_seed(seed)
    model = TwoPathwayNet()
    return ModelSpec(_finish(model, seed), ((2, 3, 2, 32, 32), (2, 3, 8, 32, 32)), "fast2", True)


MODEL_FACTORIES: dict[str, Callable[..., ModelSpec]] = {
    "resnet18": resnet18,
    "vgg11_bn": vgg11_bn,
    "mobilenet_v3_small": mobilenet_v3_small,
    "efficientnet_b0": efficientnet_b0,
    "x3d": x3d,
    "slow_resnet": slow_resnet,
    "mixed_relu_net": mixed_relu_net,
}
