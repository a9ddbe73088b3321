"""The exceptions fastnst raises.

Every error a user can cause (a bad file, a bad option, missing weights) is a
``FastNSTError`` whose message is one line saying what went wrong and how to fix
it. The CLI prints that line and exits; library users catch the class they care
about. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

from pathlib import Path


def first_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, at most ``limit`` characters (its type's name when empty).

    Runtimes and decoders raise errors with pages of C++ context; a user-facing
    message names the file and this one line.
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class FastNSTError(Exception):
    """Base class: a user-facing problem with a one-line message."""


class ConfigError(FastNSTError, ValueError):
    """An option or combination of options is invalid (CLI exit code 2)."""


class UnknownName(ConfigError):
    """A name (a style of a model, a served model) that is not there; the message lists what is (HTTP 404)."""


class FileError(FastNSTError):
    """A file could not be used. ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable (Ray, process pools) despite the two-argument constructor
        return type(self), (self.path, self.reason)


class ImageError(FileError):
    """An image file is unreadable, truncated, empty, too large or not an image."""


class ImageTooLarge(ImageError):
    """An image declares more pixels than allowed (``limit``); ``size`` is its (width, height) when known."""

    def __init__(self, path, reason: str, limit: int, size: tuple[int, int] | None = None) -> None:
        super().__init__(path, reason)
        self.limit, self.size = limit, size

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.limit, self.size)


class ModelFileError(FileError):
    """A model or checkpoint file is unsafe, truncated, or holds the wrong network."""


class WeightsError(FastNSTError):
    """Loss-network (VGG) weights are missing, unreachable or lack a needed layer."""
