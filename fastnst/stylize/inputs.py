"""What a stylize run reads and where each result goes: input discovery, safe output paths, shards.

Inputs are files, folders and glob patterns. A file's result goes to the top of
the output folder; a folder's images (searched recursively, symlinked folders
followed once so a symlink loop cannot trap the search) go under the folder's
own name, mirroring its tree; a pattern's matches mirror their path below the
pattern's fixed leading folder (``photos/**/*.jpg`` → ``sub/x.jpg``).

Output paths are built from file and folder *names* only, so ``..`` and
absolute paths cannot lead outside the output folder, and each path is checked
again against the real (symlink-resolved) output folder before anything is
written. Two inputs that would write the same output are an error for the
second, never a silent overwrite.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastnst.device import torchrun_rank
from fastnst.errors import ConfigError, FastNSTError
from fastnst.files import TEMP_MARKER, remove_stale_temporaries
from fastnst.images import IMAGE_SUFFIXES, is_image_file

FORMATS = ("same", "jpg", "png", "webp")
_WRITABLE = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Job:
    """One image to stylize: ``source`` is read, ``target`` (inside the output folder) is written."""

    source: Path
    target: Path


@dataclass
class Discovery:
    """The jobs of a run (this shard's share) and the inputs that failed before any image was read."""

    jobs: list[Job] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


@dataclass(frozen=True)
class Shard:
    """This process's share of the inputs: those whose output path hashes to ``index`` modulo ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count} is invalid: use i/n with n >= 1 and 0 <= i < n "
                              "(the index counts from 0, like RANK)")

    def owns(self, key: str) -> bool:
        # A hash of the output path, not a position in the list: shards agree even if their listings differ.
        return self.count == 1 or zlib.crc32(key.encode("utf-8", "surrogateescape")) % self.count == self.index


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n); ``ConfigError`` if malformed or out of range."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard {text!r}: write it as i/n, e.g. 0/4 for the first of four shares")
    index, count = int(match[1]), int(match[2])
    Shard(index, count)
    return index, count


def resolve_shard(shard: tuple[int, int] | None, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard to take: the explicit one, else torchrun's ``RANK``/``WORLD_SIZE``, else the whole job."""
    if shard is not None:
        return Shard(*shard)
    rank, world, _ = torchrun_rank(environ)
    return Shard(rank, world)


def output_suffix(source: Path, fmt: str) -> str:
    """The output file's suffix: ``fmt``'s, or for ``same`` the input's (PNG for inputs no writer handles)."""
    if fmt != "same":
        return "." + fmt
    suffix = source.suffix.lower()
    return suffix if suffix in _WRITABLE else ".png"


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output folder and prove it writable (write and remove a probe) before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TEMP_MARKER + "probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FastNSTError(f"{path}: the output folder cannot be written ({exc.strerror or exc}); "
                           "choose another -o/--output-dir or fix its permissions") from None
    return path.resolve()


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with the symlinks of its existing part resolved, lies inside ``folder`` (resolved)."""
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a symlink loop on the way
        return False


def _walk(folder: Path, exclude: Path) -> Iterator[Path]:
    """Every image file below ``folder``, in sorted order, following symlinked folders once each."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        real = Path(root).resolve()
        if (st.st_dev, st.st_ino) in seen or real == exclude or real.is_relative_to(exclude):
            dirs[:] = []  # a folder reached twice (symlink loop) or the output folder itself
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            if is_image_file(name) and not name.startswith(TEMP_MARKER):
                yield Path(root) / name


def _expand(item: str, exclude: Path) -> Iterator[tuple[Path, Path]] | str:
    """(source, output path relative to the output folder) pairs for one input, or the reason it gives none."""
    path = Path(item)
    if path.is_dir():
        base = Path(path.resolve().name)
        return ((source, base / source.relative_to(path)) for source in _walk(path, exclude))
    if path.exists() or path.is_symlink() or not _GLOB_CHARS.search(item):
        return iter([(path, Path(path.name))])  # a file, or a missing name that the decoder will report
    fixed = []
    for part in path.parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
    matches = [m for m in matches if m.is_file() and is_image_file(m) and not is_inside(m, exclude)]
    if not matches:
        return f"the pattern matches no image file (readable suffixes: {' '.join(IMAGE_SUFFIXES)})"
    return ((m, m.relative_to(root)) for m in matches)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def discover(inputs: tuple[str, ...] | list[str], output_dir: Path, fmt: str = "same",
             shard: Shard | None = None) -> Discovery:
    """Expand ``inputs`` into this shard's jobs writing under ``output_dir`` (resolved); report bad inputs.

    A folder never searches the output folder, so outputs kept inside the input
    tree are not stylized again on the next run.
    """
    shard = shard or Shard()
    found = Discovery()
    owner: dict[Path, Path] = {}  # target → the source writing it
    for item in inputs:
        pairs = _expand(str(item), output_dir)
        if isinstance(pairs, str):
            if shard.owns(str(item)):
                found.failures.append((str(item), pairs))
            continue
        for source, relative in pairs:
            relative = relative.with_suffix(output_suffix(source, fmt))
            target = output_dir / relative
            previous = owner.setdefault(target, source)
            if previous is not source and _same_file(previous, source):
                continue  # one file named twice (directly and through its folder, or via a symlink)
            if not shard.owns(relative.as_posix()):
                continue
            if previous is not source:
                found.failures.append((str(source), f"its output {target} is already the output of {previous}; "
                                                    "stylize one of them separately"))
            elif relative.is_absolute() or ".." in relative.parts or not is_inside(target, output_dir):
                found.failures.append((str(source), f"its output {target} would lie outside the output folder "
                                                    f"{output_dir} (a symlink or '..' in the way)"))
            else:
                found.jobs.append(Job(source, target))
    return found


def remove_temporaries(output_dir: Path, shard: Shard) -> int:
    """Delete half-written outputs a killed run left in ``output_dir``: all of them, or only this shard's.

    Shards share one output folder and run at the same time, so a shard removes
    only temporaries of outputs it owns; another shard's may be in progress.
    """
    if shard.count == 1:
        return remove_stale_temporaries(output_dir)
    return remove_stale_temporaries(output_dir, owned=lambda final: final.suffix.lower() in _WRITABLE and shard.owns(
        final.relative_to(output_dir).as_posix()))
