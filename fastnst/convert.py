"""``fastnst convert``: re-save a model as a fastnst model file, or join several into one multi-style file.

* A pytorch/examples ``.pth``/``.model`` (read safely by ``fastnst.checkpoint``)
  or a fastnst file becomes a fastnst ``.safetensors`` file, optionally fp16
  and with new style names.
* ``merge``: model files whose shared weights are identical (a model and its
  ``fastnst train --init`` extensions) become one multi-style model: a style is
  one row of (scale, shift) in each InstanceNorm, everything else is shared.
* ``select``: only some styles of a multi-style model are kept (one: a
  single-style file that loads alone), their outputs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastnst.checkpoint import load_model, save_model
from fastnst.errors import ConfigError, FastNSTError
from fastnst.styles import check_unique


class MergeError(FastNSTError):
    """Model files that cannot become one multi-style model (their shared weights differ)."""


@dataclass(frozen=True)
class ConvertConfig:
    """Options of ``fastnst convert``: a legacy (or fastnst) model file re-saved as a fastnst file.

    ``merge``: instead of ``source``, two or more model files that share all
    their non-norm weights, written as one multi-style model (``merge_models``).
    ``style_name``: one name, or one per style of the output. ``select``: the
    styles to keep (names or indices, in the output's order), after any merge.
    """

    source: str | None
    output: str
    style_name: str | tuple[str, ...] | None = None
    half: bool = False
    merge: tuple[str, ...] = ()
    select: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "merge", tuple(str(m) for m in self.merge))
        object.__setattr__(self, "select", tuple(str(m) for m in self.select))
        if len(set(self.select)) != len(self.select):
            raise ConfigError(f"--select names a style twice: {', '.join(self.select)}")
        if isinstance(self.style_name, (list, tuple)):
            object.__setattr__(self, "style_name", tuple(self.style_name) or None)
        if not str(self.output).endswith(".safetensors"):
            raise ConfigError(f"{self.output}: the output of convert must end in .safetensors")
        if (self.source is None) == (not self.merge):
            raise ConfigError("give one SOURCE model to convert, or --merge A B ... (not both)")
        if self.merge and len(self.merge) < 2:
            raise ConfigError("--merge needs at least two model files")


def convert_model(config: ConvertConfig) -> Path:
    """Load ``config.source`` (or the ``merge`` files) with the safe loader and write a fastnst model file."""
    if config.merge:
        loaded = [load_model(path) for path in config.merge]
        model = merge_models([(net, Path(path).name) for (net, _), path in zip(loaded, config.merge)])
        styles = tuple(name for (net, info), path in zip(loaded, config.merge)
                       for name in (info.styles if len(info.styles) == net.spec.num_styles else
                                    [f"{Path(path).stem}{i}" for i in range(net.spec.num_styles)]))
        extra = {"merged_from": [Path(p).name for p in config.merge], "parts": [info.config for _, info in loaded],
                 "half": config.half}
        thumbnails = sum((info.thumbnails for _, info in loaded), ())
        if not all(info.thumbnails for _, info in loaded):
            thumbnails = ()  # all or nothing: one per style
    else:
        model, info = load_model(config.source)
        styles, extra = info.styles, {**info.config, "converted_from": Path(config.source).name,
                                      "source_format": info.source}
        thumbnails = info.thumbnails
    if config.select:
        model, styles, thumbnails = _selected(model, styles, thumbnails, config.select)
        extra = {**extra, "selected_styles": list(styles)}
    if config.style_name:
        names = (config.style_name,) if isinstance(config.style_name, str) else config.style_name
        if len(names) != model.spec.num_styles:
            raise ConfigError(f"--style-name gives {len(names)} name(s); the model has {model.spec.num_styles} "
                              "style(s): give one per style, in order")
        styles = names
    check_unique(styles)
    return save_model(config.output, model, styles=styles, config=extra, half=config.half, thumbnails=thumbnails)


def _selected(model, styles: Sequence[str], thumbnails: Sequence[str], select: Sequence[str]):
    """``model`` cut down to the styles ``select`` (names or indices): (network, names, thumbnails)."""
    from fastnst.styles import model_style_names, pick_styles, style_index

    names = model_style_names(tuple(styles), model.spec.num_styles)
    return pick_styles(model, names, thumbnails, [style_index(names, key, "--select") for key in select])


def merge_models(models: Sequence[tuple]):
    """One multi-style network from ``(TransformerNet, file name)`` pairs whose shared weights are all identical.

    The styles come in order (a multi-style input contributes all its rows).
    Raises ``MergeError`` naming the first shared tensor that differs:
    separately trained models have different encoders and decoders, and a
    style's norm rows only work with the convolutions they were trained with.
    """
    import torch

    from fastnst.models.transformer import norm_rows, with_norm_rows

    first, first_name = models[0]
    rows = [norm_rows(net) for net, _ in models]
    base = first.state_dict()
    for net, name in models[1:]:
        if (net.spec.channels, net.spec.num_residual) != (first.spec.channels, first.spec.num_residual):
            raise MergeError(f"cannot merge {first_name} and {name}: different network shapes "
                             f"({first.spec.to_dict()} vs {net.spec.to_dict()})")
        state = net.state_dict()
        differing = next((k for k in base if k not in rows[0] and not torch.equal(base[k], state[k])), None)
        if differing is not None:
            raise MergeError(
                f"cannot merge {first_name} and {name}: their shared weights differ (e.g. {differing}); models "
                "trained separately share no encoder/decoder, so one's styles cannot run on the other's. Train "
                "one model with several --style images, or add a style to a model with "
                "`fastnst train --init MODEL --style NEW.jpg`")
    merged = with_norm_rows(first, {key: torch.cat([r[key] for r in rows]) for key in rows[0]})
    return merged.eval()
