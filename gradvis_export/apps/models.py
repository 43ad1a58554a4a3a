"""Video classifiers by name (pytorchvideo architectures), random-init or from a checkpoint.

Nothing is downloaded: without `checkpoint` the weights are random (seeded), which explains
the machinery, not a trained model's reasoning.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradvis_export.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    clip_len: int  # frames per clip the architecture was designed for
    size: int  # square input side in pixels
    layer: str  # default target layer (the last stage before the head)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # Kinetics normalisation
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)


CONFIGS = {
    "x3d_xs": ModelConfig("x3d_xs", 4, 160, "blocks.4"),
    "x3d_s": ModelConfig("x3d_s", 13, 160, "blocks.4"),
    "x3d_m": ModelConfig("x3d_m", 16, 224, "blocks.4"),
    "slow_r50": ModelConfig("slow_r50", 8, 224, "blocks.4"),
    # the shipped, trained model (X3D-XS on generated car-light clips); its clip length, size,
    # classes and normalisation are read from the checkpoint's metadata
    "carlights": ModelConfig("carlights", 6, 80, "blocks.4"),
}

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: shipped checkpoints: name -> file (written by `python -m gradvis_export.apps.train`)
SHIPPED = {"carlights": ASSETS / "carlights_x3d_xs.pt"}
#: the attribute a shipped model built by `build` carries: the target layer its training used
RECORDED_LAYER = "gradvis_layer"
#: a short generated video the shipped model explains (`gradvis explain` with no arguments)
SAMPLE_VIDEO = ASSETS / "carlights_sample.mp4"


def shipped_meta(name: str = "carlights") -> dict:
    """The metadata recorded with a shipped checkpoint: model, num_classes, clip_len, size,
    class_names, mean, std, layer, seed, accuracy, ..."""
    path = SHIPPED[name]
    if not path.is_file():
        raise InputError(
            f"the shipped {name!r} checkpoint is missing ({path}): reinstall gradvis, or train it "
            "with `python -m gradvis_export.apps.train --out " + str(path) + "`"
        )
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True).get("meta")
    except Exception as error:
        raise InputError(
            f"the shipped checkpoint {path} cannot be read safely ({type(error).__name__}): "
            "reinstall gradvis or retrain it with gradvis_export.apps.train"
        ) from None
    if not isinstance(meta, dict):
        raise InputError(f"{path} has no 'meta' record; retrain it with gradvis_export.apps.train")
    return meta


def config(name: str) -> ModelConfig:
    if name not in CONFIGS:
        close = difflib.get_close_matches(name, list(CONFIGS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown model {name!r}: choose one of {', '.join(CONFIGS)}{hint}")
    if name in SHIPPED:
        meta = shipped_meta(name)
        return ModelConfig(
            name,
            int(meta["clip_len"]),
            int(meta["size"]),
            str(meta.get("layer", CONFIGS[name].layer)),
            tuple(meta["mean"]),
            tuple(meta["std"]),
        )
    return CONFIGS[name]


def build(
    name: str,
    num_classes: int = 400,
    clip_len: int | None = None,
    size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    spatial_strides: tuple[int, ...] | None = None,
) -> nn.Module:
    """The architecture `name` for clips of `clip_len` frames at `size`^2, in eval mode.

    `spatial_strides` (X3D only) replaces the four stages' spatial strides (2, 2, 2, 2): a
    stride of 1 in the last stage doubles the side of the map the CAM methods read (the shipped
    model's choice, as the CAM paper shrinks its networks' stride for localisation).  A
    shipped model ("carlights") is its recorded architecture with its trained weights (or
    `checkpoint`'s); its number of classes and strides come from the checkpoint."""
    cfg = config(name)
    if name in SHIPPED:
        meta = shipped_meta(name)
        model = build(
            meta["model"],
            int(meta["num_classes"]),
            clip_len or cfg.clip_len,
            size or cfg.size,
            checkpoint if checkpoint is not None else SHIPPED[name],
            seed,
            tuple(meta.get("spatial_strides", (2, 2, 2, 2))),
        )
        setattr(model, RECORDED_LAYER, cfg.layer)
        return model
    if spatial_strides is not None and not (
        name.startswith("x3d")
        and len(spatial_strides) == 4
        and all(s in (1, 2) for s in spatial_strides)
    ):
        raise InputError(
            f"spatial_strides {spatial_strides} do not fit {name}: four strides of 1 or 2, "
            "for the X3D models only"
        )
    clip_len, size = clip_len or cfg.clip_len, size or cfg.size
    if size < 32 or (name == "slow_r50" and size % 32):
        raise InputError(
            f"--size {size} does not fit {name}: at least 32"
            + (", and a multiple of 32 (its head pools /32)" if name == "slow_r50" else "")
        )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("x3d"):
            from pytorchvideo.models.x3d import create_x3d

            model = create_x3d(
                input_clip_length=clip_len,
                input_crop_size=size,
                model_num_class=num_classes,
                head_activation=None,
                stage_spatial_stride=spatial_strides or (2, 2, 2, 2),
            )
        else:
            from pytorchvideo.models.resnet import create_resnet

            model = create_resnet(
                model_depth=50,
                model_num_class=num_classes,
                stem_conv_kernel_size=(1, 7, 7),
                head_pool_kernel_size=(clip_len, size // 32, size // 32),
                head_activation=None,
            )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict (raw, or under 'state_dict' / 'model_state' / 'model'), strictly."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"{str(path)!r} is not a PyTorch checkpoint torch.load can read safely "
            f"({type(error).__name__}); save it with torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model_state", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"{str(path)!r} holds {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or wrong:
        parts = [
            f"{what} {keys[:3]}"
            for what, keys in (
                ("shapes differ:", wrong),
                ("missing", missing),
                ("unexpected", unexpected),
            )
            if keys
        ]
        raise InputError(
            f"the checkpoint does not fit the model ({'; '.join(parts)}): check --model and "
            "--num-classes"
        )
    model.load_state_dict(state)
