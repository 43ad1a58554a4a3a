"""Whether an explainer is being traced for export: data-dependent checks are skipped then."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_TRACING: contextvars.ContextVar[bool] = contextvars.ContextVar("gradvis_tracing", default=False)


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Mark a trace for export: checks on input values (target range, shapes) are skipped."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)


def is_tracing() -> bool:
    return _TRACING.get()
