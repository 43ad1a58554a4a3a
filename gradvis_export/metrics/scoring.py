"""The model's score of a class on (perturbed) inputs: batched, under torch.no_grad."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from gradvis_export.errors import InputError

Score = Literal["softmax", "logit"]
SCORES = ("softmax", "logit")

#: a class per sample: one int for the batch, a sequence or an int tensor (B,)
ClassIndex = int | Sequence[int] | torch.Tensor


def check_score(score: object) -> None:
    if score not in SCORES:
        raise InputError(f"score={score!r}; choose 'softmax' (the class's probability) or 'logit'")


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(
            f"batch_size={batch_size!r}; it is the number of inputs per forward, an int >= 1"
        )
    return batch_size


def class_indices(target: ClassIndex, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) int64 classes on `device` from an int, a sequence or a tensor."""
    if isinstance(target, bool):
        raise InputError(f"target={target!r}; pass a class index (int) or one per sample (B,)")
    if not isinstance(target, torch.Tensor) and hasattr(target, "__index__"):  # numpy ints too
        return torch.full((batch,), operator.index(target), dtype=torch.long, device=device)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(f"target has dtype {target.dtype}; class indices are integers")
        out = target.to(device=device, dtype=torch.long).reshape(-1)
        if target.dim() == 0:
            out = out.expand(batch)
    else:
        try:
            values = [int(t) for t in target]
        except (TypeError, ValueError) as error:
            raise InputError(
                f"target={target!r}; pass a class index (int) or one per sample (B,)"
            ) from error
        out = torch.tensor(values, dtype=torch.long, device=device)
    if out.shape != (batch,):
        raise InputError(
            f"target has {out.numel()} classes for a batch of {batch}; pass one int or one "
            "class per sample (B,)"
        )
    return out


def logits_of(model: nn.Module | Callable, inputs: torch.Tensor) -> torch.Tensor:
    """The model's (N, K) class scores, with a clear error for any other output."""
    out = model(inputs)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"the model returned {shape}; these metrics need class scores (N, num_classes) "
            "— wrap a model with another output so that it returns them"
        )
    return out


def pick(logits: torch.Tensor, classes: torch.Tensor, score: Score) -> torch.Tensor:
    """(N,) score of class classes[n] of each row (its softmax probability or its logit)."""
    bad = (classes < 0) | (classes >= logits.shape[1])
    if bool(bad.any()):
        raise InputError(
            f"target {classes[bad].tolist()} out of range: the model has {logits.shape[1]} "
            f"classes (valid targets 0..{logits.shape[1] - 1})"
        )
    values = torch.softmax(logits, dim=1) if score == "softmax" else logits
    return values.gather(1, classes[:, None])[:, 0]


@torch.no_grad()
def target_scores(
    model: nn.Module | Callable,
    count: int,
    build: Callable[[torch.Tensor], torch.Tensor],
    classes: torch.Tensor,
    score: Score,
    batch_size: int,
) -> torch.Tensor:
    """(count,) scores of inputs 0..count-1: build(indices) makes a chunk of at most
    `batch_size` inputs, classes[i] is input i's class."""
    out = []
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(start + batch_size, count), device=classes.device)
        out.append(pick(logits_of(model, build(index)), classes[index], score))
    return torch.cat(out)
