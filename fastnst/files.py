"""Files: writing them so that nothing is ever half-written, and finding them so that nothing is missed.

Every file fastnst produces (model files, checkpoints, images, reports) is first
written under a temporary name in the destination folder, flushed to the disk
(``fsync``), and then renamed into place, the folder flushed too. A rename within
one folder is atomic on POSIX and Windows, so a reader, a killed run or a power
cut leaves either the old file, the complete new one, or nothing.

``walk_files`` is the one way fastnst lists a folder tree (stylize's inputs,
training photos): sorted, symlinked folders followed once each (loops cannot
trap it), any depth (no recursion), and every folder it could not read named.
``lock_folder`` keeps two runs from writing into one output folder at once;
``show_path`` prints any file name on one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fastnst.errors import FastNSTError

# Temporary files carry this marker so a resumed run can recognise and remove
# leftovers of a killed one (see ``remove_stale_temporaries``).
TEMP_MARKER = ".fastnst-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_MARKER) + r"(?P<stem>.*)-[0-9a-f]{8}(?P<suffix>\.[^.]*)?$")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched. The
    temporary name keeps the final suffix so that libraries choosing a format by
    extension (Pillow, safetensors) behave as for the real name.
    """
    path = Path(path)
    make_folders(path.parent)
    while True:
        tmp = path.parent / _temporary_name(path)
        try:
            # Mode 0o666 filtered by the umask, as for any ordinary new file (mkstemp would give 0o600).
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


NAME_MAX = 255  # bytes in one file name on the file systems fastnst writes to


def make_folders(folder: Path) -> None:
    """``folder`` and its missing parents, one level at a time (a mirrored tree may be deeper than Python's
    recursion limit, which ``Path.mkdir(parents=True)`` and ``os.makedirs`` recurse through)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()


def _temporary_name(path: Path) -> str:
    """``.fastnst-tmp-<stem>-<8 hex><suffix>``, or a short hashed name when that would pass ``NAME_MAX`` bytes."""
    name = f"{TEMP_MARKER}{path.stem}-{secrets.token_hex(4)}{path.suffix}"
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    return f"{TEMP_MARKER}{digest}-{secrets.token_hex(4)}{path.suffix[:16]}"


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk; folders that cannot be opened are skipped (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot sync folders
            raise
    finally:
        os.close(fd)


def probe_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable by writing and removing a probe file; ``OSError`` if not.

    Done before hours of work (training, a photo library), not found out at the first save.
    """
    make_folders(folder)
    fd, probe = tempfile.mkstemp(prefix=TEMP_MARKER + "probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def remove_stale_temporaries(folder: str | Path, owned=None) -> int:
    """Delete temporary files a killed run left in ``folder`` (recursively); return how many.

    ``owned(final_path)``, if given, keeps only the temporaries of files it
    accepts (several processes may share one folder and each cleans its own).
    """
    removed = 0
    for tmp in Path(folder).rglob(TEMP_MARKER + "*"):
        final = final_name(tmp)
        if owned is not None and (final is None or not owned(final)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def remove_temporaries_of(*targets: Path) -> None:
    """Delete the temporaries a killed run left while writing ``targets`` (a checkpoint, a model file)."""
    for target in targets:
        for tmp in target.parent.glob(TEMP_MARKER + "*"):
            if final_name(tmp) == target:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def final_name(tmp: Path) -> Path | None:
    """The file a temporary of ``atomic_path`` was going to become, or None for another kind of temporary."""
    match = _TEMP_NAME.match(tmp.name)
    return tmp.with_name(match["stem"] + (match["suffix"] or "")) if match else None


def show_path(path) -> str:
    """``path`` as text for a one-line message: control characters (a newline in a name) and bytes that are
    not UTF-8 (an old camera's or SMB share's names) escaped, everything else as is."""
    text = str(path)
    return "".join(c if c.isprintable() and not 0xDC80 <= ord(c) <= 0xDCFF else
                   (f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c.encode("unicode_escape").decode())
                   for c in text)


def walk_files(root: Path, keep: Callable[[str], bool], exclude: Path | None = None
               ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file below ``root`` whose name ``keep`` accepts, sorted, and the folders that could not be read.

    Symlinked folders are followed once each (a symlink loop cannot trap the
    walk), any depth works (an explicit stack, no recursion), ``exclude`` (a
    resolved folder, e.g. the output folder) and everything in it is skipped,
    and names starting with ``.`` (hidden files, macOS ``._`` AppleDouble
    files, fastnst's own temporaries) are never listed. Returns (files,
    [(folder, reason), ...]).
    """
    files: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            real = folder.resolve()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            unreadable.append((folder, exc.strerror or str(exc)))
            continue
        if (info.st_dev, info.st_ino) in seen or (exclude is not None and real.is_relative_to(exclude)):
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()  # follows symlinks
                is_file = not is_folder and stat.S_ISREG(entry.stat().st_mode)
            except OSError as exc:
                if entry.is_symlink():  # a dangling link or a link loop: listed, so its reader names the problem
                    is_folder, is_file = False, True
                else:
                    unreadable.append((Path(entry.path), exc.strerror or str(exc)))
                    continue
            if is_folder:
                subfolders.append(Path(entry.path))
            elif is_file and keep(entry.name):
                files.append(Path(entry.path))
        stack.extend(reversed(subfolders))
    return files, unreadable


class FolderLocked(FastNSTError):
    """Another run holds the lock on an output folder."""


@contextlib.contextmanager
def lock_folder(folder: Path, name: str = ".fastnst-lock") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a lock file inside it) for the ``with`` block.

    A second run on the same folder gets ``FolderLocked`` at once (one line:
    wait for the other run or choose another folder) instead of deleting the
    first run's temporary files and interleaving reports. The lock dies with its
    process, so a killed run never leaves a stale lock. Where the OS has no
    ``fcntl`` (Windows) the lock is not taken.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = folder / name
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise FolderLocked(f"{show_path(folder)}: another fastnst run (pid {owner}) is writing into this "
                               "folder; wait for it to finish or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)  # nothing of ours stays in the folder
    finally:
        os.close(fd)
