"""Where `--model` comes from: a shipped or named architecture, torchvision, pytorchvideo, or the
user's own factory (`path/to/file.py:function`, `package.module:function`).

Nothing is downloaded: builders are called without pretrained weights; trained weights come from
`--checkpoint` (a state dict, read with `weights_only=True`).  Every bad value is an `InputError`
of one line naming the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradvis_export.apps import models
from gradvis_export.errors import InputError

#: ImageNet's normalisation of RGB in [0, 1] (torchvision's classifiers, most image models)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: torchvision's video models (Kinetics-400 as torchvision's weights were trained)
TV_VIDEO_MEAN, TV_VIDEO_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
#: pytorchvideo's models (Kinetics-400 as pytorchvideo's recipes normalise)
PTV_MEAN, PTV_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
#: the clip length and size pytorchvideo's hub models were trained with (others: 8 x 224)
PTV_SHAPES = {"x3d_xs": (4, 160), "x3d_s": (13, 160), "x3d_m": (16, 224), "x3d_l": (16, 312)}
#: torchvision's video models trained at 112 (the others at 224); all take 16 frames
TV_SMALL_VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")


@dataclass(frozen=True)
class ModelSpec:
    """What `--model` and its options say, before anything is built."""

    name: str | None = None  # None: the shipped car-light model (or x3d_xs with a checkpoint)
    checkpoint: Path | None = None
    num_classes: int | None = None
    clip_len: int | None = None
    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: Path | None = None


@dataclass
class LoadedModel:
    """A model ready to explain, with what the video job and the exporter need to feed it."""

    model: nn.Module
    name: str
    video: bool  # takes (B, 3, T, H, W) clips; else (B, 3, H, W) images
    clip_len: int | None  # frames per clip (video models)
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layer: str | None  # the recorded or configured target layer; None: the default-layer rule
    num_classes: int
    class_names: list[str] | None
    trained: bool  # weights from a checkpoint, a shipped model or the user's factory
    shipped: bool = False
    # "classification": (B, K) logits; "segmentation": dense class scores (B, K, H, W), the
    # tensor itself or `output_key` of a dict (torchvision's {"out": ...}) at `output_size`
    task: str = "classification"
    output_key: str | None = None
    output_size: tuple[int, int] | None = None

    def example(self, batch: int = 1) -> torch.Tensor:
        """A float input of the model's layout (zeros)."""
        if self.video:
            return torch.zeros(batch, 3, self.clip_len, self.size, self.size)
        return torch.zeros(batch, 3, self.size, self.size)


def read_labels(path: Path) -> list[str]:
    """One class name a line (blank lines at the end ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels {str(path)!r}: no such file (one class name a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(
            f"--labels {str(path)!r} is not UTF-8 text (one class name a line)"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"--labels {str(path)!r} is empty (one class name a line)")
    return [line.strip() for line in lines]


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _torchvision(name: str, num_classes: int | None) -> tuple[nn.Module, bool]:
    import torchvision.models as tvm

    video = tvm.list_models(module=tvm.video)
    segmentation = tvm.list_models(module=tvm.segmentation)
    known = tvm.list_models(module=tvm) + video + segmentation
    if name not in known:
        raise InputError(
            f"torchvision has no classification, segmentation or video model "
            f"{name!r}{_closest(name, known)} (torchvision.models.list_models() lists them)"
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name in segmentation:  # no backbone weights either: nothing is downloaded
        kwargs["weights_backbone"] = None
    return tvm.get_model(name, weights=None, **kwargs), name in video


def _pytorchvideo(name: str, num_classes: int | None) -> nn.Module:
    import pytorchvideo.models.hub as hub

    known = [
        n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n)) and "_" in n
    ]
    if name not in known:
        raise InputError(f"pytorchvideo has no hub model {name!r}{_closest(name, known)}")
    kwargs = {} if num_classes is None else {"model_num_class": num_classes}
    return getattr(hub, name)(pretrained=False, **kwargs)


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """The factory file's folder importable while it loads (as `python file.py` would)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _factory(spec: str) -> Callable[..., object]:
    """`path/to/file.py:function` or `package.module:function` -> the function."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise InputError(
            f"--model {spec!r}: give NAME, torchvision:NAME, pytorchvideo:NAME, "
            "path/to/file.py:function or package.module:function"
        )
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise InputError(f"--model {spec!r}: no file {where!r}")
        module_name = f"gradvis_user_{path.stem}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        try:
            with _on_path(path.resolve().parent):
                loader.loader.exec_module(module)
        except Exception as error:
            raise InputError(
                f"--model {spec!r}: importing {where} failed: {type(error).__name__}: {error}"
            ) from None
    else:
        try:
            with _on_path(Path.cwd()):
                module = importlib.import_module(where)
        except ImportError as error:
            raise InputError(
                f"--model {spec!r}: cannot import {where!r} ({error}); install the package or "
                "give path/to/file.py:function"
            ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise InputError(f"--model {spec!r}: {where} has no {attr!r}{_closest(attr, public)}")
    if not callable(fn):
        raise InputError(f"--model {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def _call_factory(spec: str, fn: Callable[..., object], num_classes: int | None) -> nn.Module:
    kwargs = {}
    if num_classes is not None:
        params = inspect.signature(fn).parameters
        takes = "num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
        if not takes:
            raise InputError(
                f"--num-classes: {spec} takes no num_classes argument; drop --num-classes"
            )
        kwargs["num_classes"] = num_classes
    try:
        model = fn(**kwargs)
    except Exception as error:
        raise InputError(f"--model {spec!r} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _is_video(model: nn.Module) -> bool | None:
    """True when the first convolution is 3-D, False when 2-D, None without one."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            return True
        if isinstance(module, nn.Conv2d):
            return False
    return None


def _count_classes(loaded: LoadedModel, spec_name: str) -> int:
    """One forward on zeros: the model takes the layout and returns (B, K) logits, or dense
    class scores (B, K, H, W) of an image segmenter (a tensor, or a dict's "out")."""
    x = loaded.example(1)
    try:
        with torch.no_grad():
            out = loaded.model(x)
    except Exception as error:
        kind = "video clips" if loaded.video else "images"
        fix = (
            "--clip-len and --size" if loaded.video else "--size (or --clip-len for a video model)"
        )
        raise InputError(
            f"--model {spec_name!r} does not run on {kind} {tuple(x.shape)} "
            f"({type(error).__name__}: {str(error).splitlines()[0][:160]}); pass {fix}"
        ) from None
    key = None
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        key, out = "out", out["out"]
    if isinstance(out, torch.Tensor) and out.dim() == 4 and not loaded.video:
        loaded.task, loaded.output_key = "segmentation", key
        loaded.output_size = (int(out.shape[2]), int(out.shape[3]))
        return int(out.shape[1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"--model {spec_name!r} returns {shape}, not (batch, classes) logits nor an image "
            "segmenter's (batch, classes, H, W) scores: the video job explains those; export "
            "other targets with gv.export (e.g. gv.DetectionTarget) and pass --artifact"
        )
    return int(out.shape[1])


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build (and load) the model `spec` names, in eval mode; the user's model is not changed
    beyond `eval()` and the checkpoint's weights."""
    name = spec.name or ("carlights" if spec.checkpoint is None else "x3d_xs")
    labels = read_labels(spec.labels) if spec.labels is not None else None
    prefix, _, rest = name.partition(":")
    shipped = False
    if ":" not in name:  # the named architectures of apps/models.py
        cfg = models.config(name)
        shipped = name in models.SHIPPED
        if shipped:
            meta = models.shipped_meta(name)
            if spec.num_classes not in (None, meta["num_classes"]):
                raise InputError(
                    f"--num-classes {spec.num_classes} does not fit the shipped {name!r} model "
                    f"({meta['num_classes']} classes: {', '.join(meta['class_names'])})"
                )
            labels = labels or list(meta["class_names"])
        clip_len, size = spec.clip_len or cfg.clip_len, spec.size or cfg.size
        model = models.build(name, spec.num_classes or 400, clip_len, size, spec.checkpoint)
        loaded = LoadedModel(
            model, name, True, clip_len, size, spec.mean or cfg.mean, spec.std or cfg.std,
            cfg.layer, 0, labels, spec.checkpoint is not None or shipped, shipped,
        )  # fmt: skip
        loaded.num_classes = int(meta["num_classes"]) if shipped else spec.num_classes or 400
    else:
        # a builder's head follows --num-classes, else the number of --labels (a factory's
        # model is the user's: only an explicit --num-classes is passed to it)
        head = spec.num_classes or (len(labels) if labels else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if prefix == "torchvision":
                model, video = _torchvision(rest, head)
                small = rest in TV_SMALL_VIDEO
                size = spec.size or (112 if small else 224)
                mean, std = (
                    (TV_VIDEO_MEAN, TV_VIDEO_STD) if video else (IMAGENET_MEAN, IMAGENET_STD)
                )
                clip_len = (spec.clip_len or 16) if video else None
                trained = False
            elif prefix == "pytorchvideo":
                model, video = _pytorchvideo(rest, head), True
                clip_len, size = PTV_SHAPES.get(rest, (8, 224))
                clip_len, size = spec.clip_len or clip_len, spec.size or size
                mean, std, trained = PTV_MEAN, PTV_STD, False
            else:
                model = _call_factory(name, _factory(name), spec.num_classes)
                video = bool(spec.clip_len) or bool(_is_video(model))
                clip_len = (spec.clip_len or 8) if video else None
                size = spec.size or 224
                mean, std, trained = IMAGENET_MEAN, IMAGENET_STD, True
        if spec.checkpoint is not None:
            models.load_checkpoint(model, spec.checkpoint)
            trained = True
        loaded = LoadedModel(
            model.eval(), name, video, clip_len, size, spec.mean or mean, spec.std or std,
            None, 0, labels, trained,
        )  # fmt: skip
        loaded.num_classes = _count_classes(loaded, name)
    if spec.num_classes is not None and loaded.num_classes != spec.num_classes:
        raise InputError(
            f"--num-classes {spec.num_classes}: the model returns {loaded.num_classes} classes"
        )
    if loaded.class_names is not None and len(loaded.class_names) != loaded.num_classes:
        raise InputError(
            f"--labels {str(spec.labels)!r} has {len(loaded.class_names)} names but the model has "
            f"{loaded.num_classes} classes: one name a line, in class order"
        )
    return loaded
