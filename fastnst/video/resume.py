"""The hidden work folder beside a video's output, where finished segments wait until the video is complete.

For ``OUT_DIR/clip.mp4`` it is ``OUT_DIR/.clip.mp4.fastnst-parts/`` and holds:

* ``manifest.json``: what the segments were made from (input file size and
  time, model file, every option that changes pixels, the segment length). A
  later run with anything different starts the video over;
* ``segment-000003.mp4``: the stylized frames of segment 3, H.264;
* ``segment-000003.json``: written last, so its presence means the segment is
  finished: its first frame index, frame count and last pts;
* ``state-000003.npz``: what the temporal blend needs to continue after segment 3
  (the last input frame in grey and the last output frame), written before the
  segment's ``.json``.

Every file goes through ``fastnst.files.atomic_path``; a killed run leaves at
most temporaries, which the next run removes. Finished segments are a prefix
0..k-1: the run writes them in order.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastnst.files import atomic_path, remove_stale_temporaries

log = logging.getLogger(__name__)

SUFFIX = ".fastnst-parts"


@dataclass(frozen=True)
class Segment:
    """One finished segment: frames ``first`` .. ``first + frames - 1``; ``last_pts`` its last frame's pts."""

    index: int
    first: int
    frames: int
    last_pts: int

    @property
    def end(self) -> int:
        """The index of the frame after this segment."""
        return self.first + self.frames


def work_folder(target: Path) -> Path:
    """The hidden work folder of the output ``target``."""
    return target.with_name(f".{target.name}{SUFFIX}")


class WorkFolder:
    """Finished segments of one output, kept only while their ``manifest`` matches this run's."""

    def __init__(self, target: Path, manifest: dict) -> None:
        self.path = work_folder(target)
        text = json.dumps(manifest, sort_keys=True)
        manifest_file = self.path / "manifest.json"
        if self.path.is_dir() and not _same(manifest_file, text):
            log.info("%s: the input, model or options changed since the interrupted run; starting the video over",
                     target)
            self.remove()
        if self.path.is_dir():
            remove_stale_temporaries(self.path)
        else:
            with atomic_path(manifest_file) as tmp:
                tmp.write_text(text, encoding="utf-8")

    def segment_path(self, index: int) -> Path:
        return self.path / f"segment-{index:06d}.mp4"

    def finished(self) -> list[Segment]:
        """The finished segments 0..k-1, in order (a segment whose files are incomplete ends the list)."""
        done = []
        while True:
            index = len(done)
            record = self.path / f"segment-{index:06d}.json"
            if not (record.is_file() and self.segment_path(index).is_file()):
                return done
            try:
                done.append(Segment(index, **json.loads(record.read_text(encoding="utf-8"))))
            except (ValueError, TypeError, OSError):
                return done

    def finish(self, segment: Segment, state: dict[str, np.ndarray]) -> None:
        """Record ``segment`` as finished (its video file already in place), with the blend state after it."""
        if state:
            with atomic_path(self.path / f"state-{segment.index:06d}.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **state)
        record = {"first": segment.first, "frames": segment.frames, "last_pts": segment.last_pts}
        with atomic_path(self.path / f"segment-{segment.index:06d}.json") as tmp:
            tmp.write_text(json.dumps(record), encoding="utf-8")
        old = self.path / f"state-{segment.index - 1:06d}.npz"
        old.unlink(missing_ok=True)

    def state(self, segment: Segment) -> dict[str, np.ndarray]:
        """The blend state saved after ``segment`` (empty if none was)."""
        path = self.path / f"state-{segment.index:06d}.npz"
        if not path.is_file():
            return {}
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _same(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False
