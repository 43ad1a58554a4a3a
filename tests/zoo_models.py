"""The model zoo of the compatibility matrix: torchvision classifiers and pytorchvideo models.

Every entry builds a seeded, randomly initialised model in eval mode (nothing is downloaded)
at a small input size.  Convolutional architectures use torchvision's / pytorchvideo's own
builders unchanged except for the number of classes; where a builder's smallest config is
large (the ViT, Swin, MaxViT and MViT transformers, pytorchvideo's ResNet-50 widths) the same
model class is built with fewer or narrower blocks, which changes sizes, not operators.  The
`note` of an entry says what was changed.

`layer` is the layer the documented default-layer rule must pick (worked out by hand from the
architecture's forward, see `gradvis_export.core.layers.default_layer`); `fast` marks the rows CI
runs without `--zoo`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

NUM_CLASSES = 10


@dataclass(frozen=True)
class ZooModel:
    name: str  # the builder (or class) it comes from
    family: str
    builder: Callable[[], nn.Module]  # random init, train mode
    shapes: tuple[tuple[int, ...], ...]  # per-sample input shapes; two for SlowFast
    layer: str  # what default_layer must choose
    fast: bool = False  # in the CI subset
    note: str = ""
    video: bool = False
    tokens: tuple[int, tuple[int, ...]] | None = None  # the layer's (class tokens, grid)

    @property
    def multi_input(self) -> bool:
        return len(self.shapes) > 1

    def build(self, seed: int = 0) -> nn.Module:
        """The model, seeded, BatchNorm calibrated, in eval mode."""
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _randomise(self.builder(), self.shapes, seed)


def _randomise(model: nn.Module, shapes, seed: int) -> nn.Module:
    """BatchNorm calibrated on random inputs, then a random affine; no all-zero weight matrix.

    Random init leaves BN at mean 0 / var 1, far from the statistics the layers really see
    (torchvision's 0.01-std inits shrink them, pytorchvideo zeroes each block's last gamma);
    many ReLUs would then be dead for every input and guided gradients all zero.  Running
    statistics measured on a random batch keep the activations alive, as training does.
    ViT's head starts at zero: it gets random weights.
    """
    gen = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
            if m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        if norms:
            xs = [torch.randn((8, *shape), generator=gen) for shape in shapes]
            model.train()
            model(xs if len(xs) > 1 else xs[0])
        for m in norms:
            m.momentum = 0.1
    return model.eval()


def tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    """A torchvision builder, random weights, NUM_CLASSES classes."""
    builder = getattr(torchvision.models, name)
    return lambda: builder(weights=None, num_classes=NUM_CLASSES, **kwargs)


def vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
        num_classes=NUM_CLASSES,
    )  # fmt: skip


def swin(v2: bool) -> Callable[[], nn.Module]:
    from torchvision.models import swin_transformer as st

    def build() -> nn.Module:
        extra = (
            {"block": st.SwinTransformerBlockV2, "downsample_layer": st.PatchMergingV2}
            if v2
            else {}
        )
        return st.SwinTransformer(
            patch_size=[4, 4], embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
            window_size=[4, 4] if v2 else [7, 7], stochastic_depth_prob=0.1,
            num_classes=NUM_CLASSES, **extra,
        )  # fmt: skip

    return build


def maxvit() -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(64, 64), stem_channels=16, partition_size=2, block_channels=[16, 32, 64, 64],
        block_layers=[1, 1, 1, 1], head_dim=16, stochastic_depth_prob=0.1,
        num_classes=NUM_CLASSES,
    )  # fmt: skip


# --------------------------------------------------------------------------- pytorchvideo
def x3d() -> nn.Module:
    from pytorchvideo.models.x3d import create_x3d

    return create_x3d(input_clip_length=4, input_crop_size=64, model_num_class=NUM_CLASSES)


def _resnet3d(**kwargs) -> nn.Module:
    from pytorchvideo.models.resnet import create_resnet

    return create_resnet(
        model_depth=50, model_num_class=NUM_CLASSES, stem_dim_out=16, dropout_rate=0.0,
        head_pool_kernel_size=(kwargs.pop("frames"), 2, 2), **kwargs,
    )  # fmt: skip


def slow() -> nn.Module:  # hub slow_r50's config
    return _resnet3d(frames=4, stem_conv_kernel_size=(1, 7, 7))


def c2d() -> nn.Module:  # hub c2d_r50's config
    return _resnet3d(
        frames=2,
        stem_conv_kernel_size=(1, 7, 7),
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=((1, 1, 1),) * 4,
    )


def i3d() -> nn.Module:  # hub i3d_r50's config
    return _resnet3d(
        frames=2,
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=(
            (3, 1, 1),
            [(3, 1, 1), (1, 1, 1)],
            [(3, 1, 1), (1, 1, 1)],
            [(1, 1, 1), (3, 1, 1)],
        ),
    )


def slowfast() -> nn.Module:
    from pytorchvideo.models.slowfast import create_slowfast

    return create_slowfast(
        model_depth=50, model_num_class=NUM_CLASSES, dropout_rate=0.0, stem_dim_outs=(16, 2),
        slowfast_fusion_conv_stride=(4, 1, 1), head_pool_kernel_sizes=((2, 2, 2), (8, 2, 2)),
    )  # fmt: skip


def r2plus1d() -> nn.Module:
    from pytorchvideo.models.r2plus1d import create_r2plus1d

    return create_r2plus1d(
        model_depth=50, model_num_class=NUM_CLASSES, stem_dim_out=16, dropout_rate=0.0,
        head_pool_kernel_size=(1, 2, 2), head_activation=None,
    )  # fmt: skip


def csn() -> nn.Module:
    from pytorchvideo.models.csn import create_csn

    return create_csn(
        model_depth=50, model_num_class=NUM_CLASSES, stem_dim_out=16, dropout_rate=0.0,
        stem_pool=nn.MaxPool3d, head_pool_kernel_size=(1, 2, 2),
    )  # fmt: skip


def mvit() -> nn.Module:
    from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers

    return create_multiscale_vision_transformers(
        spatial_size=64, temporal_size=8, depth=4, patch_embed_dim=32, num_heads=1,
        embed_dim_mul=[[1, 2.0], [3, 2.0]], atten_head_mul=[[1, 2.0], [3, 2.0]],
        pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2]], pool_kv_stride_adaptive=[1, 4, 4],
        pool_kvq_kernel=[3, 3, 3], head_num_classes=NUM_CLASSES, head_dropout_rate=0.0,
    )  # fmt: skip


IMG = ((3, 64, 64),)


def _vid(frames: int, size: int = 64) -> tuple[tuple[int, ...], ...]:
    return ((3, frames, size, size),)


VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        # ResNet / ResNeXt / Wide-ResNet
        ZooModel("resnet18", "ResNet", tv("resnet18"), IMG, "layer4", fast=True),
        ZooModel("resnet50", "ResNet", tv("resnet50"), IMG, "layer4"),
        ZooModel("resnext50_32x4d", "ResNeXt", tv("resnext50_32x4d"), IMG, "layer4"),
        ZooModel("wide_resnet50_2", "Wide-ResNet", tv("wide_resnet50_2"), IMG, "layer4"),
        # plain stacks
        # at 64 px the last max-pool of `features` leaves 1x1: the rule takes the ReLU before it
        ZooModel("alexnet", "AlexNet", tv("alexnet"), IMG, "features.11"),
        ZooModel("vgg11", "VGG", tv("vgg11"), IMG, "features"),
        ZooModel("vgg11_bn", "VGG", tv("vgg11_bn"), IMG, "features"),
        ZooModel("densenet121", "DenseNet", tv("densenet121"), IMG, "features"),
        # mobile
        ZooModel("mobilenet_v2", "MobileNet v2", tv("mobilenet_v2"), IMG, "features"),
        ZooModel(
            "mobilenet_v3_small",
            "MobileNet v3",
            tv("mobilenet_v3_small"),
            IMG,
            "features",
            fast=True,
        ),  # fmt: skip
        ZooModel("mobilenet_v3_large", "MobileNet v3", tv("mobilenet_v3_large"), IMG, "features"),
        ZooModel(
            "efficientnet_b0", "EfficientNet", tv("efficientnet_b0"), IMG, "features", fast=True
        ),
        ZooModel("efficientnet_v2_s", "EfficientNet v2", tv("efficientnet_v2_s"), IMG, "features"),
        ZooModel("regnet_x_400mf", "RegNet", tv("regnet_x_400mf"), IMG, "trunk_output"),
        ZooModel("regnet_y_400mf", "RegNet", tv("regnet_y_400mf"), IMG, "trunk_output", fast=True),
        ZooModel(
            "shufflenet_v2_x0_5",
            "ShuffleNet v2",
            tv("shufflenet_v2_x0_5"),
            IMG,
            "conv5",
            fast=True,
        ),  # fmt: skip
        # the final 1x1 conv makes one map per class; the default is its ReLU (classic CAM)
        ZooModel("squeezenet1_0", "SqueezeNet", tv("squeezenet1_0"), IMG, "classifier.2"),
        ZooModel(
            "squeezenet1_1", "SqueezeNet", tv("squeezenet1_1"), IMG, "classifier.2", fast=True
        ),
        ZooModel(
            "googlenet",
            "GoogLeNet",
            tv("googlenet", aux_logits=False, init_weights=True),
            IMG,
            "inception5b",
            fast=True,
        ),  # fmt: skip
        ZooModel(
            "inception_v3",
            "Inception v3",
            tv("inception_v3", aux_logits=False, init_weights=True),
            ((3, 128, 128),),
            "Mixed_7c",
            note="128 px: the smallest input with a 2x2 last map",
        ),  # fmt: skip
        ZooModel("mnasnet0_5", "MNASNet", tv("mnasnet0_5"), IMG, "layers"),
        ZooModel("convnext_tiny", "ConvNeXt", tv("convnext_tiny"), IMG, "features", fast=True),
        ZooModel(
            "vit",
            "ViT",
            vit,
            IMG,
            VIT_LAYER,
            fast=True,
            tokens=(1, (4, 4)),
            note="VisionTransformer, patch 16, 2 layers, width 64 (vit_b_16: 12 layers, 768)",
        ),  # fmt: skip
        ZooModel(
            "swin",
            "Swin",
            swin(False),
            IMG,
            "permute",
            fast=True,
            note="SwinTransformer, depths 1-1-2-1, width 32 (swin_t: 2-2-6-2, 96)",
        ),  # fmt: skip
        ZooModel(
            "swin_v2",
            "Swin v2",
            swin(True),
            IMG,
            "permute",
            note="SwinTransformer with V2 blocks, depths 1-1-2-1, width 32, window 4",
        ),  # fmt: skip
        ZooModel(
            "maxvit",
            "MaxViT",
            maxvit,
            IMG,
            "blocks.3",
            note="MaxVit, one layer per stage, widths 16-64, partition 2 (maxvit_t: 7, 64-512)",
        ),  # fmt: skip
        # pytorchvideo
        ZooModel(
            "x3d",
            "X3D",
            x3d,
            _vid(4),
            "blocks.5.pool.pre_act",
            fast=True,
            video=True,
            note="create_x3d (X3D-XS config) at 4x64x64",
        ),  # fmt: skip
        ZooModel(
            "slow",
            "Slow",
            slow,
            _vid(4),
            "blocks.4",
            fast=True,
            video=True,
            note="create_resnet, slow_r50's config, stem width 16 (64)",
        ),  # fmt: skip
        # a stage returns [slow, fast]: a layer stands for its first tensor, the slow pathway
        ZooModel(
            "slowfast",
            "SlowFast",
            slowfast,
            ((3, 2, 64, 64), (3, 8, 64, 64)),
            "blocks.4",
            fast=True,
            video=True,
            note="create_slowfast R50, stem widths 16/2 (64/8); [slow, fast] list input",
        ),  # fmt: skip
        ZooModel(
            "r2plus1d",
            "R(2+1)D",
            r2plus1d,
            _vid(4),
            "blocks.4",
            video=True,
            note="create_r2plus1d, stem width 16 (64)",
        ),  # fmt: skip
        ZooModel(
            "csn",
            "CSN",
            csn,
            _vid(4),
            "blocks.4",
            video=True,
            note="create_csn R50, stem width 16 (64)",
        ),  # fmt: skip
        # stage1_pool adds a block (blocks.2): the last stage is blocks.5
        ZooModel(
            "c2d",
            "C2D",
            c2d,
            _vid(4),
            "blocks.5",
            video=True,
            note="create_resnet, c2d_r50's config, stem width 16 (64)",
        ),  # fmt: skip
        ZooModel(
            "i3d",
            "I3D",
            i3d,
            _vid(4),
            "blocks.5",
            video=True,
            note="create_resnet, i3d_r50's config, stem width 16 (64)",
        ),  # fmt: skip
        ZooModel(
            "mvit",
            "MViT",
            mvit,
            _vid(8),
            "blocks.3.norm1",
            fast=True,
            video=True,
            tokens=(1, (4, 8, 8)),  # the input of the last block, before its query pooling
            note="create_multiscale_vision_transformers, 4 blocks, width 32 (MViT-B: 16, 96)",
        ),  # fmt: skip
    ]
}


def make_inputs(entry: ZooModel, batch: int, seed: int) -> torch.Tensor | list[torch.Tensor]:
    """Seeded standard-normal input(s) for `entry`: one tensor, or a list for SlowFast."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn((batch, *shape), generator=gen) for shape in entry.shapes]
    return xs if entry.multi_input else xs[0]
