"""Error types: each names the problem and the fix, so callers never see a torch internal trace."""


class GradvisError(Exception):
    """Base class of every error gradvis raises on purpose."""


class InputError(GradvisError, ValueError):
    """The input or target handed to an explainer does not fit the model."""


class LayerError(GradvisError, ValueError):
    """A target layer is unknown, never called, or does not affect the output."""


class ExportError(GradvisError, RuntimeError):
    """An explainer could not be turned into a forward-only artifact that matches eager."""


class VideoError(InputError):
    """A video file is missing, unreadable, empty, or not a video."""


class OutputError(GradvisError, OSError):
    """An output could not be written (disk full, read-only or forbidden folder, a folder in
    the way): one line naming the file and the fix; an older output of that name is kept."""
