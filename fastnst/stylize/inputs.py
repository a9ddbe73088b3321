"""What a stylize run reads and where each result goes: input discovery, safe output paths, shards.

Inputs are files, folders and glob patterns. A file's result goes to the top of
the output folder. A folder's images (searched recursively by
``fastnst.files.walk_files``: symlinked folders followed once, any depth, every
unreadable folder reported) mirror the folder's tree: directly under the output
folder when the folder is the only input (``holiday/ -o styled/`` writes
``styled/IMG_1.jpg``, as batch tools do), under the folder's own name when there
are several inputs, so they cannot collide. A pattern's matches mirror their path
below the pattern's fixed leading folder (``photos/**/*.jpg`` → ``sub/x.jpg``).

Nothing is ever written over an input: an output folder that holds input photos,
an input folder inside the output folder, and any output that is an input file
itself (a hard link, a symlink) are refused before anything is read.

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
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastnst.device import torchrun_rank
from fastnst.errors import ConfigError, FastNSTError
from fastnst.files import NAME_MAX, probe_writable, remove_stale_temporaries, show_path, walk_files
from fastnst.images import IMAGE_SUFFIXES, UNREADABLE_SUFFIXES, unreadable_format

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
        probe_writable(path)
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


def _listed(name: str) -> bool:
    """Files a folder search lists: images to stylize, and photo formats to report as unreadable."""
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in UNREADABLE_SUFFIXES


@dataclass(frozen=True)
class MediaKind:
    """What a run stylizes: the files folders and patterns list, each output's suffix, what is refused unread."""

    noun: str  # "photo", "video": for messages
    suffixes: tuple[str, ...]  # the readable ones, for messages
    listed: Callable[[str], bool]  # file name → whether a folder search or a pattern lists it
    output_suffix: Callable[[Path, str], str]  # (source, --format) → the output's suffix
    unreadable: Callable[[Path], str | None]  # why a listed file cannot be read (known from its name), or None


PHOTOS = MediaKind("photo", IMAGE_SUFFIXES, _listed, output_suffix, unreadable_format)


def _expand(item: str, exclude: Path, alone: bool, kind: MediaKind
            ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(source, output path relative to the output folder) pairs for one input, and its failures (input, reason).

    ``alone``: the input is the run's only one, so a folder's tree goes directly under the output folder.
    """
    path = Path(item)
    readable = f"readable suffixes: {' '.join(kind.suffixes)}"
    try:
        if path.is_dir():
            real = path.resolve()
            if real.is_relative_to(exclude):
                return [], [(item, f"this folder is inside the output folder {show_path(exclude)}, whose files are "
                                   "never read as inputs; choose an output folder outside it")]
            files, unreadable = walk_files(path, kind.listed, exclude)
            base = Path() if alone else Path(real.name)
            failures = [(str(folder), f"cannot list this folder ({why}); its {kind.noun}s were not stylized")
                        for folder, why in unreadable]
            if not files and not unreadable:
                failures.append((item, f"the folder holds no {kind.noun} file ({readable})"))
            return [(f, base / f.relative_to(path)) for f in files], failures
        if path.exists() or path.is_symlink() or not _GLOB_CHARS.search(item):
            return [(path, Path(path.name))], []  # a file, or a missing name that the decoder will report
    except OSError as exc:
        return [], [(item, f"cannot read this input ({exc.strerror or exc})")]
    fixed = []
    for part in path.parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
    matches = [m for m in matches if kind.listed(m.name) and m.is_file() and not is_inside(m, exclude)]
    if not matches:
        return [], [(item, f"the pattern matches no {kind.noun} file ({readable})")]
    return [(m, m.relative_to(root)) for m in matches], []


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def discover(inputs: tuple[str, ...] | list[str], output_dir: Path, fmt: str = "same",
             shard: Shard | None = None, kind: MediaKind = PHOTOS) -> Discovery:
    """Expand ``inputs`` into this shard's jobs writing under ``output_dir`` (resolved); report bad inputs.

    ``kind`` says what the run stylizes (``PHOTOS``; ``fastnst video`` passes its
    own): which files folders and patterns list and each output's suffix (for
    photos ``fmt``'s).

    A folder never searches the output folder, so outputs kept inside the input
    tree are not stylized again on the next run. Raises ``FastNSTError`` when
    the output folder holds input photos: writing there could replace them.
    """
    shard = shard or Shard()
    found = Discovery()
    owner: dict[Path, Path] = {}  # target → the source writing it
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        expanded, failures = _expand(str(item), output_dir, len(inputs) == 1, kind)
        found.failures += [(i, why) for i, why in failures if shard.owns(str(i))]
        pairs += expanded
    _refuse_overlap(pairs, output_dir, kind.noun)
    sources = _identities(source for source, _ in pairs)
    for source, relative in pairs:
        relative = relative.with_suffix(kind.output_suffix(source, fmt))
        target = output_dir / relative
        previous = owner.setdefault(target, source)
        if previous is not source and _same_file(previous, source):
            continue  # one file named twice (directly and through its folder, or via a symlink)
        if not shard.owns(relative.as_posix()):
            continue
        problem = _target_problem(source, target, relative, output_dir, previous, sources, kind)
        if problem:
            found.failures.append((str(source), problem))
        else:
            found.jobs.append(Job(source, target))
    return found


def _refuse_overlap(pairs: list[tuple[Path, Path]], output_dir: Path, noun: str) -> None:
    """``FastNSTError`` when a source photo lies directly in the output folder tree's matching place: the run
    would write its results beside (or over) the originals, e.g. ``holiday/*.jpg -o holiday``."""
    for source, relative in pairs:
        try:
            same = (output_dir / relative).parent.resolve() == source.parent.resolve()
        except OSError:
            continue
        if same:
            raise FastNSTError(f"the output folder {show_path(output_dir)} holds the input {noun}s (e.g. "
                               f"{show_path(source)}): results would land beside the originals and could replace "
                               "them; choose an output folder of its own with -o")


def _identities(paths) -> dict[tuple[int, int], Path]:
    """(device, inode) → path of every source that exists: how a target that *is* an input is recognised."""
    out = {}
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        out[(info.st_dev, info.st_ino)] = path
    return out


def _target_problem(source: Path, target: Path, relative: Path, output_dir: Path, previous: Path,
                    sources: dict[tuple[int, int], Path], kind: MediaKind) -> str | None:
    """Why ``source`` may not be written to ``target``, or None."""
    reason = kind.unreadable(source)
    if reason:
        return reason
    if previous is not source:
        return f"its output {show_path(target)} is already the output of {show_path(previous)}; stylize one of " \
               "them separately"
    if relative.is_absolute() or ".." in relative.parts or not is_inside(target, output_dir):
        return f"its output {show_path(target)} would lie outside the output folder {show_path(output_dir)} " \
               "(a symlink or '..' in the way)"
    if len(os.fsencode(target.name)) > NAME_MAX:
        return f"its output name is {len(os.fsencode(target.name))} bytes, over the {NAME_MAX} a file name may " \
               "have; rename the photo"
    try:
        info = target.stat()
    except OSError:
        return None
    original = sources.get((info.st_dev, info.st_ino))
    if original is not None:
        return f"its output {show_path(target)} is the input {kind.noun} {show_path(original)} itself (a link); " \
               "refused, it would be replaced"
    return None


def remove_temporaries(output_dir: Path, shard: Shard) -> int:
    """Delete half-written outputs a killed run left in ``output_dir``: all of them, or only this shard's.

    Shards share one output folder and run at the same time, so a shard removes
    only temporaries of outputs it owns; another shard's may be in progress.
    """
    if shard.count == 1:
        return remove_stale_temporaries(output_dir)
    return remove_stale_temporaries(output_dir, owned=lambda final: final.suffix.lower() in _WRITABLE and shard.owns(
        final.relative_to(output_dir).as_posix()))
