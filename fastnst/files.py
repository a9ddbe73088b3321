"""Writing files so that nothing is ever half-written.

Every file fastnst produces (model files, checkpoints, images, reports) is first
written under a temporary name in the destination folder and then renamed into
place. A rename within one folder is atomic on POSIX and Windows, so a reader or
a killed run sees either the old file, the complete new one, or nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f"{TEMP_MARKER}{path.stem}-{secrets.token_hex(4)}{path.suffix}"
        try:
            # Mode 0o666 filtered by the umask, as for any ordinary new file (mkstemp would give 0o600).
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is one of fastnst's temporary files (``atomic_path``'s or a probe)."""
    return Path(path).name.startswith(TEMP_MARKER)


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
        for tmp in target.parent.glob(f"{TEMP_MARKER}{target.stem}-*{target.suffix}"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def final_name(tmp: Path) -> Path | None:
    """The file a temporary of ``atomic_path`` was going to become, or None for another kind of temporary."""
    match = _TEMP_NAME.match(tmp.name)
    return tmp.with_name(match["stem"] + (match["suffix"] or "")) if match else None
