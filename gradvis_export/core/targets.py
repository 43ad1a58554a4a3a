"""Targets: what scalar of the model's output an explanation is about.

A target is a module `forward(output, **inputs) -> (B,)`, one score per sample.  Its extra
inputs (`target`, `mask`, `reference`, `box`, `label`) become named inputs of the exported
artifact, so one artifact serves every class, mask, reference embedding or box.  `resolve`
fixes what depends on the clean output (e.g. -1 -> the argmax class) before any masked or
ablated forward of ScoreCAM / AblationCAM is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradvis_export.core.mode import is_tracing
from gradvis_export.errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """One extra graph input: its name, dtype, and the value a runtime fills in when omitted."""

    name: str
    dtype: torch.dtype
    default: float | int | None = None  # None: the caller must give it
    doc: str = ""
    rank: int | None = None  # None: checked against the model output by the target

    def expected(self, batch: int) -> str:
        return f"({batch},)" if self.rank == 1 else f"({batch}, ...)"


def _tensor(value: object, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, (int, float, bool)):
        return torch.tensor(value, dtype=dtype)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        try:
            return torch.tensor(value, dtype=dtype)
        except (TypeError, ValueError) as error:
            raise InputError(f"{name} could not be read as a tensor: {error}") from None
    if hasattr(value, "__array__") and not isinstance(value, torch.Tensor):
        return torch.as_tensor(value)
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{name} must be a tensor, got {type(value).__name__}")
    return value


def select(output: object, key: str | int | None) -> torch.Tensor:
    """The tensor of a model output a target scores: the output itself, or `output[key]`."""
    if isinstance(output, torch.Tensor) and key is None:
        return output
    if isinstance(output, dict):
        if key is None:
            key = "out" if "out" in output else next(iter(output))
        if key not in output:
            raise InputError(
                f"the model's output has no entry {key!r}; it has {', '.join(map(repr, output))}"
            )
        return output[key]
    if isinstance(output, (list, tuple)):
        index = 0 if key is None else key
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise InputError(
                f"the model returns {len(output)} outputs; choose one by position (0.."
                f"{len(output) - 1}) instead of {key!r}"
            )
        return output[index]
    raise InputError(
        f"the model returned {type(output).__name__}; expected a tensor, a tuple or a dict of tensors"
    )


class Target(nn.Module):
    """Base: `forward(output, **inputs)` gives each sample's score (B,).

    Subclasses declare `specs` (their extra graph inputs), `check` them against the output in
    eager mode, and `example` values to trace and test with.
    """

    specs: tuple[InputSpec, ...] = ()
    output_names: tuple[str, ...] | None = None  # names of a tuple output's fields

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def coerce(self, values: dict[str, object], batch: int, device: torch.device) -> dict:
        """User values -> tensors of the graph inputs' dtypes, batch-first, defaults filled."""
        out = {}
        for spec in self.specs:
            value = values.get(spec.name)
            if value is None:
                if spec.default is None:
                    raise InputError(
                        f"{type(self).__name__} needs the input {spec.name!r}: {spec.doc}"
                    )
                value = spec.default
            t = _tensor(value, spec.name, spec.dtype)
            if spec.dtype == torch.long and (
                t.is_floating_point() or t.is_complex() or t.dtype == torch.bool
            ):
                raise InputError(f"{spec.name} must hold integers (int64), got dtype {t.dtype}")
            if t.dim() == 0:
                t = t.expand(batch)
            t = t.to(device=device, dtype=spec.dtype)
            wrong_rank = spec.rank is not None and t.dim() != spec.rank
            if wrong_rank or (not is_tracing() and t.shape[0] != batch):
                raise InputError(
                    f"{spec.name} has shape {tuple(t.shape)}; expected {spec.expected(batch)}: "
                    f"{spec.doc}"
                )
            out[spec.name] = t
        return out

    def check(self, output: object, inputs: dict[str, torch.Tensor]) -> None:
        """Eager-only validation of the inputs against the model output (skipped in traces)."""

    def resolve(self, output: object, inputs: dict[str, torch.Tensor]) -> dict:
        """Inputs with what depends on the clean output fixed (default: unchanged)."""
        return inputs

    def example(
        self, name: str, batch: int, x: torch.Tensor, output: object, generator: torch.Generator
    ) -> torch.Tensor:
        """A value of input `name` to trace with and to check artifacts on."""
        raise NotImplementedError(name)

    def num_classes(self, output: object) -> int | None:
        """How many classes its class input chooses from (None: it has no class input)."""
        return None

    def metadata(self) -> dict[str, object]:
        return {"type": type(self).__name__}


def _classes(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-1 -> the argmax class of that sample."""
    return torch.where(target < 0, scores.argmax(dim=1), target)


def _pick(scores: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """scores[b, classes[b], ...] as a one-hot product: a class outside the range picks nothing
    (a zero heatmap in an artifact, which cannot raise)."""
    onehot = classes.unsqueeze(1) == torch.arange(scores.shape[1], device=scores.device)
    onehot = onehot.to(scores.dtype).view(*onehot.shape, *([1] * (scores.dim() - 2)))
    return (scores * onehot).sum(dim=1)


def _check_classes(target: torch.Tensor, num_classes: int) -> None:
    bad = (target < -1) | (target >= num_classes)
    if bool(bad.any()):
        raise InputError(
            f"target {target[bad].tolist()} out of range: the model has {num_classes} classes "
            f"(valid targets 0..{num_classes - 1}, or -1 for the argmax)"
        )


def _class_example(batch: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    target = torch.full((batch,), -1, dtype=torch.long)
    target[0] = int(torch.randint(0, num_classes, (1,), generator=generator))
    return target


def _scores_2d(logits: torch.Tensor, what: str) -> torch.Tensor:
    if logits.dim() != 2:
        raise InputError(
            f"the model returned shape {tuple(logits.shape)}; {what} expects class scores "
            "(B, num_classes) — use SegmentationTarget for dense outputs, RawOutputTarget for "
            "regression heads"
        )
    return logits


_CLASS = InputSpec("target", torch.long, -1, "int64 (B,): class per sample, -1 = argmax", 1)


class ClassTarget(Target):
    """The logit of class `target` (int64 (B,), -1 = the argmax). The default target."""

    specs = (_CLASS,)

    def __init__(self, output: str | int | None = None) -> None:
        super().__init__()
        self.key = output

    def logits(self, output: object) -> torch.Tensor:
        return _scores_2d(select(output, self.key), type(self).__name__)

    def check(self, output, inputs):
        _check_classes(inputs["target"], self.logits(output).shape[1])

    def resolve(self, output, inputs):
        return {**inputs, "target": _classes(self.logits(output), inputs["target"])}

    def forward(self, output: object, target: torch.Tensor) -> torch.Tensor:
        logits = self.logits(output)
        return _pick(logits, _classes(logits, target))

    def example(self, name, batch, x, output, generator):
        return _class_example(batch, self.logits(output).shape[1], generator)

    def num_classes(self, output):
        return int(self.logits(output).shape[1])


class SoftmaxTarget(ClassTarget):
    """The softmax probability of class `target` (-1 = argmax)."""

    def forward(self, output: object, target: torch.Tensor) -> torch.Tensor:
        logits = self.logits(output)
        return _pick(torch.softmax(logits, dim=1), _classes(logits, target))


class RawOutputTarget(Target):
    """The model's raw output, summed per sample: regression and binary (B,1) heads."""

    def __init__(self, output: str | int | None = None) -> None:
        super().__init__()
        self.key = output

    def forward(self, output: object) -> torch.Tensor:
        return select(output, self.key).flatten(1).sum(dim=1)


class SegmentationTarget(Target):
    """Sum of class `target`'s logits over `mask` (B,H,W) or (B,T,H,W), at the output's size.

    -1 = the class with the largest masked sum.  `output` picks the tensor of a dict / tuple
    output (torchvision's segmentation models return {"out": ...}).
    """

    specs = (
        InputSpec("target", torch.long, -1, "int64 (B,): class per sample, -1 = best in mask", 1),
        InputSpec("mask", torch.float32, 1.0, "float (B, *output spatial size), 1 = pixel counts"),
    )

    def __init__(self, output: str | int | None = None) -> None:
        super().__init__()
        self.key = output

    def logits(self, output: object) -> torch.Tensor:
        logits = select(output, self.key)
        if logits.dim() not in (4, 5):
            raise InputError(
                f"SegmentationTarget needs dense class scores (B,C,H,W) or (B,C,T,H,W); the "
                f"model returned shape {tuple(logits.shape)}"
            )
        return logits

    def coerce(self, values, batch, device):
        mask = values.get("mask")
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            values = {**values, "mask": mask.float()}
        return super().coerce(values, batch, device)

    def masked_sums(self, output: object, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(output)
        if mask.dim() == 1:  # the scalar default, expanded over the batch
            mask = mask.view(-1, *([1] * (logits.dim() - 2)))
        return (logits * mask.unsqueeze(1)).flatten(2).sum(dim=2)  # (B, C)

    def check(self, output, inputs):
        logits, mask = self.logits(output), inputs["mask"]
        if mask.dim() > 1 and tuple(mask.shape[1:]) != tuple(logits.shape[2:]):
            raise InputError(
                f"mask has shape {tuple(mask.shape)}; the model's output is "
                f"{tuple(logits.shape)}, so the mask must be (B, {', '.join(map(str, logits.shape[2:]))})"
            )
        _check_classes(inputs["target"], logits.shape[1])

    def resolve(self, output, inputs):
        sums = self.masked_sums(output, inputs["mask"])
        return {**inputs, "target": _classes(sums, inputs["target"])}

    def forward(self, output: object, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        sums = self.masked_sums(output, mask)
        return _pick(sums, _classes(sums, target))

    def example(self, name, batch, x, output, generator):
        logits = self.logits(output)
        if name == "target":
            return _class_example(batch, logits.shape[1], generator)
        return (torch.rand((batch, *logits.shape[2:]), generator=generator) > 0.5).float()

    def num_classes(self, output):
        return int(self.logits(output).shape[1])


class EmbeddingSimilarityTarget(Target):
    """Cosine similarity of the model's embedding (B,D) with `reference` (B,D): re-identification,
    retrieval."""

    specs = (
        InputSpec("reference", torch.float32, None, "float (B, D): the embedding to match", 2),
    )

    def __init__(self, output: str | int | None = None) -> None:
        super().__init__()
        self.key = output

    def embedding(self, output: object) -> torch.Tensor:
        return select(output, self.key).flatten(1)

    def check(self, output, inputs):
        d, ref = self.embedding(output).shape[1], inputs["reference"]
        if ref.dim() != 2 or ref.shape[1] != d:
            raise InputError(
                f"reference has shape {tuple(ref.shape)}; the model's embedding has {d} "
                f"dimensions, so reference must be (B, {d})"
            )

    def forward(self, output: object, reference: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.embedding(output), reference, dim=1, eps=1e-8)

    def example(self, name, batch, x, output, generator):
        return torch.randn((batch, self.embedding(output).shape[1]), generator=generator)


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of box (B,4) with each of boxes (B,N,4), corners (x1, y1, x2, y2)."""
    box = box.unsqueeze(1)
    top_left = torch.maximum(box[..., :2], boxes[..., :2])
    bottom_right = torch.minimum(box[..., 2:], boxes[..., 2:])

    def area(size: torch.Tensor) -> torch.Tensor:  # not .prod(): it reaches ONNX as a prim
        size = size.clamp(min=0)
        return size[..., 0] * size[..., 1]

    inter = area(bottom_right - top_left)
    union = area(box[..., 2:] - box[..., :2]) + area(boxes[..., 2:] - boxes[..., :2]) - inter
    return inter / union.clamp(min=1e-9)


class DetectionTarget(Target):
    """A dense detector's evidence for `box` (B,4, x1y1x2y2 in input pixels) of class `label`.

    The model returns raw head outputs before NMS: boxes (B,N,4) and class scores (B,N,C)
    (positions or keys `boxes`, `scores`).  Score = sum over predictions n with
    IoU(box, boxes_n) >= `iou_threshold` of IoU_n * scores[n, label] — the IoU-weighted form of
    pytorch-grad-cam's FasterRCNN target, without its data-dependent best-match selection.
    label -1 = each prediction's best class.
    """

    specs = (
        InputSpec("box", torch.float32, None, "float (B, 4): x1, y1, x2, y2 in input pixels", 2),
        InputSpec("label", torch.long, -1, "int64 (B,): class per sample, -1 = best class", 1),
    )
    output_names = ("boxes", "scores")

    def __init__(
        self, boxes: str | int = 0, scores: str | int = 1, iou_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.boxes_key, self.scores_key = boxes, scores
        self.iou_threshold = float(iou_threshold)

    def heads(self, output: object) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = select(output, self.boxes_key), select(output, self.scores_key)
        if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.dim() != 3:
            raise InputError(
                f"DetectionTarget needs boxes (B,N,4) and class scores (B,N,C); the model gave "
                f"{tuple(boxes.shape)} and {tuple(scores.shape)}"
            )
        return boxes, scores

    def check(self, output, inputs):
        _, scores = self.heads(output)
        if inputs["box"].dim() != 2 or inputs["box"].shape[1] != 4:
            raise InputError(f"box has shape {tuple(inputs['box'].shape)}; expected (B, 4)")
        _check_classes(inputs["label"], scores.shape[2])

    def forward(self, output: object, box: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        boxes, scores = self.heads(output)
        iou = box_iou(box, boxes)
        weight = iou * (iou >= self.iou_threshold).to(iou.dtype)
        best = scores.amax(dim=2)
        onehot = label.view(-1, 1, 1) == torch.arange(scores.shape[2], device=scores.device)
        picked = (scores * onehot.to(scores.dtype)).sum(dim=2)
        chosen = torch.where((label < 0).view(-1, 1), best, picked)
        return (weight * chosen).sum(dim=1)

    def example(self, name, batch, x, output, generator):
        if name == "label":
            return _class_example(batch, self.heads(output)[1].shape[2], generator)
        boxes, _ = self.heads(output)
        pick = torch.randint(0, boxes.shape[1], (batch,), generator=generator)
        base = boxes.detach()[torch.arange(batch) % boxes.shape[0], pick]
        return base + torch.randn(base.shape, generator=generator)  # near a prediction

    def num_classes(self, output):
        return int(self.heads(output)[1].shape[2])

    def metadata(self):
        return {**super().metadata(), "iou_threshold": self.iou_threshold}
