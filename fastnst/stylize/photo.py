"""One photo in, one output out: the steps every way of running a stylize job shares.

``decode`` reads a job's photo, ``encode`` writes its result atomically inside
the output folder, ``failure_reason`` turns whatever went wrong at a step into
the one line a user reads, and ``Record`` is the job's line in the report.
``stylize_job`` chains them for one photo; the local pipeline
(``fastnst.stylize.pipeline``) runs the same steps in its thread pools, and a
cluster runner calls ``stylize_job`` per photo, so both write the same bytes to
the same paths and report the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fastnst.errors import FastNSTError, ImageError, first_line
from fastnst.images import encoder_limit, open_image, resize_long_side, save_image
from fastnst.stylize.config import StylizeConfig
from fastnst.stylize.inputs import Job, is_inside

log = logging.getLogger(__name__)

STATUSES = ("done", "skipped", "failed")


@dataclass(frozen=True)
class Record:
    """One input's line in the report: what happened to it and where its output is."""

    input: str
    output: str | None
    status: str  # one of STATUSES
    reason: str = ""
    width: int | None = None
    height: int | None = None
    tiles: int = 0

    def to_json(self) -> str:
        """One JSON line; names that are not valid UTF-8 (old cameras, SMB shares) are kept, escaped."""
        fields = {k: v for k, v in asdict(self).items() if v not in ("", None) or k in ("output", "status")}
        if self.width is None:
            fields.pop("tiles", None)
        return json.dumps(fields, ensure_ascii=True)


def decode(job: Job, config: StylizeConfig) -> np.ndarray:
    """The job's photo as (H, W, 3) uint8, EXIF-oriented and downsized to ``config.max_size``; ``ImageError``
    also when the output format cannot hold its size (found now, not after the compute)."""
    image = resize_long_side(open_image(job.source, config.max_pixels), config.max_size)
    problem = encoder_limit(job.target, *image.size)
    if problem:
        raise ImageError(job.source, problem)
    return np.array(image, dtype=np.uint8)


def encode(job: Job, pixels: np.ndarray, config: StylizeConfig, output_dir: Path) -> None:
    """Write the stylized (H, W, 3) uint8 ``pixels`` to the job's target, atomically, after checking the target
    is still inside ``output_dir`` (resolved)."""
    if not is_inside(job.target.parent, output_dir):
        raise FastNSTError(f"{job.target} would lie outside the output folder {output_dir}")
    save_image(Image.fromarray(pixels), job.target, quality=config.quality)


def failure_reason(exc: BaseException, stage: str, job: Job) -> str:
    """The one line a report gives for ``exc`` raised while ``stage`` (decoding, computing, encoding) ``job``."""
    if isinstance(exc, ImageError):
        return exc.reason
    if stage == "computing":
        return f"the network failed ({first_line(exc, 200)})"
    if isinstance(exc, FastNSTError):
        return str(exc)
    if isinstance(exc, OSError) and stage == "encoding":
        return f"cannot write {job.target} ({exc.strerror or exc})"
    verb = "decode" if stage == "decoding" else "encode " + str(job.target)
    return f"cannot {verb} ({type(exc).__name__}: {first_line(exc, 200)})"


def is_complete(target: Path) -> bool:
    """Whether ``target`` exists and decodes to the end: a finished output a rerun may skip.

    An output torn by a crash or a power cut (empty, truncated) is not, so a
    rerun makes it again.
    """
    try:
        if not target.is_file():
            return False
        open_image(target, max_pixels=None)
    except (ImageError, OSError):
        log.info("redoing %s: the existing output does not decode (torn by a crash?)", target)
        return False
    return True


def prepare(job: Job, config: StylizeConfig) -> np.ndarray | Record:
    """The first half of a job: its (H, W, 3) uint8 pixels, or its record when its output is already there
    (skipped unless ``config.overwrite``, as in the local pipeline) or the photo does not decode."""
    if not config.overwrite and is_complete(job.target):
        return Record(str(job.source), str(job.target), "skipped")
    try:
        return decode(job, config)
    except Exception as exc:  # noqa: BLE001 - one odd file (a decoder bug) must not stop the library
        return Record(str(job.source), None, "failed", failure_reason(exc, "decoding", job))


def finish(job: Job, styled: np.ndarray, config: StylizeConfig, output_dir: Path, tiles: int) -> Record:
    """The second half: write the stylized (H, W, 3) uint8 ``styled``; the job's record (done or failed)."""
    try:
        encode(job, styled, config, output_dir)
    except Exception as exc:  # noqa: BLE001 - an encoder bug on one photo must not stop the library
        return Record(str(job.source), None, "failed", failure_reason(exc, "encoding", job))
    height, width = styled.shape[:2]
    return Record(str(job.source), str(job.target), "done", width=width, height=height, tiles=tiles)


def stylize_job(job: Job, stylizer, config: StylizeConfig, output_dir: Path) -> Record:
    """Decode, stylize and write one photo; its ``Record`` (a failure is a record, never an exception)."""
    pixels = prepare(job, config)
    if isinstance(pixels, Record):
        return pixels
    try:
        styled = stylizer.stylize_pixels(pixels[None])[0]
    except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the library
        return Record(str(job.source), None, "failed", failure_reason(exc, "computing", job))
    return finish(job, styled, config, output_dir, stylizer.tiles(*pixels.shape[:2]))
