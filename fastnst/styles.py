"""Several styles in one model: naming them, and choosing or mixing them at inference.

A multi-style network (``TransformerSpec.num_styles`` N > 1, conditional
instance norm) shares every convolution between its styles; a style is one row
of (scale, shift) in each InstanceNorm. Choosing a style is a weight vector
(N,): one-hot for one style, a convex mix to blend them (``resolve_style``
turns ``--style`` / ``--style-mix`` into it, with a one-line error listing the
model's styles). Plain Python and numpy: the stylization path needs no PyTorch.
Training several styles lives in ``fastnst.train.styles``, merging model files in
``fastnst.convert``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fastnst.errors import ConfigError, UnknownName

# -- names and choice -------------------------------------------------------------------------------

def style_names(paths: Sequence[str | Path], names: Sequence[str] = ()) -> tuple[str, ...]:
    """Names of the styles of ``paths``: ``names`` if given (one per path), else the file stems; unique."""
    names = tuple(str(n) for n in names) or tuple(Path(p).stem for p in paths)
    if len(names) != len(paths):
        raise ConfigError(f"--style-name gives {len(names)} name(s) for {len(paths)} style image(s); give one per "
                          "--style image, in the same order")
    check_unique(names)
    return names


def check_unique(names: Sequence[str]) -> None:
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ConfigError(f"style name(s) {', '.join(duplicates)} appear more than once; every style needs its own "
                          "name: set them with --style-name")


def model_style_names(styles: Sequence[str], num_styles: int) -> tuple[str, ...]:
    """A model's style names as recorded, or ``style0``, ``style1``, ... when the file does not name them all."""
    return tuple(styles) if len(styles) == num_styles else tuple(f"style{i}" for i in range(num_styles))


def _listing(names: Sequence[str]) -> str:
    return ", ".join(f"{i}={name}" for i, name in enumerate(names))


def parse_style_mix(text: str) -> dict[str, float]:
    """``"starry=0.7,wave=0.3"`` → ``{"starry": 0.7, "wave": 0.3}`` (not yet checked against a model)."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name.strip() or weight is None:
            raise ConfigError(f"--style-mix {text!r}: write NAME=WEIGHT pairs separated by commas, "
                              "e.g. starry=0.7,wave=0.3")
        mix[name.strip()] = mix.get(name.strip(), 0.0) + weight
    if not mix:
        raise ConfigError("--style-mix is empty: give NAME=WEIGHT pairs, e.g. starry=0.7,wave=0.3")
    return mix


def resolve_style(names: Sequence[str], style: int | str | None = None,
                  mix: str | Mapping[str | int, float] | None = None, *,
                  options: tuple[str, str] = ("--style", "--style-mix")) -> np.ndarray | None:
    """The style weights (N,) float32 a model with styles ``names`` should use, or None for its default.

    ``style`` is a name or an index (an ``int`` or a digit string); ``mix`` is
    ``"a=0.7,b=0.3"`` or a mapping of names or indices to weights >= 0, normalised
    to sum 1. Both None: None (the first style). Errors are one-line
    ``ConfigError``s (``UnknownName`` for a style the model lacks, listing its
    styles) naming ``options``, the two parameters as the caller calls them.
    """
    style_option, mix_option = options
    if style is not None and mix is not None:
        raise ConfigError(f"give {style_option} or {mix_option}, not both")
    if style is None and mix is None:
        return None
    n = len(names)
    if style is not None:
        return np.eye(n, dtype=np.float32)[style_index(names, style, style_option)]
    items = parse_style_mix(mix) if isinstance(mix, str) else dict(mix)
    weights = np.zeros(n, dtype=np.float64)
    for key, value in items.items():
        value = float(value)
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{mix_option}: weight {value} for {key!r}; weights must be finite and >= 0")
        weights[style_index(names, key, mix_option)] += value
    if weights.sum() <= 0:
        raise ConfigError(f"{mix_option}: the weights sum to 0; give at least one positive weight")
    return (weights / weights.sum()).astype(np.float32)


def style_index(names: Sequence[str], key: int | str, option: str) -> int:
    if isinstance(key, str) and key in names:
        return list(names).index(key)
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        if 0 <= int(key) < len(names):
            return int(key)
    raise UnknownName(f"{option}: the model has no style {key!r}; its styles are {_listing(names)}")


def describe(weights, names: Sequence[str]) -> str:
    """``"starry"`` or ``"starry 70% + wave 30%"`` for log lines and reports."""
    if weights is None:
        return names[0] if names else "the model's style"
    parts = [(name, float(w)) for name, w in zip(names, weights) if w > 0]
    if len(parts) == 1:
        return parts[0][0]
    return " + ".join(f"{name} {w:.0%}" for name, w in parts)


def pick_styles(model, names: Sequence[str], thumbnails: Sequence[str], indices: Sequence[int]):
    """``model`` cut down to the styles ``indices`` (in that order), with their names and thumbnails.

    Returns (network, names, thumbnails); the thumbnails are () when ``model``
    did not have one per style. One index gives a single-style network that loads alone.
    """
    from fastnst.models.transformer import select_styles

    indices = list(indices)
    kept = tuple(thumbnails[i] for i in indices) if len(thumbnails) == len(names) else ()
    return select_styles(model, indices), tuple(names[i] for i in indices), kept
