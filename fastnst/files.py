"""Writing files so that nothing is ever half-written.

Every file fastnst produces (model files, checkpoints, images, reports) is first
written under a temporary name in the destination folder and then renamed into
place. A rename within one folder is atomic on POSIX and Windows, so a reader or
a killed run sees either the old file, the complete new one, or nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

# Temporary files carry this marker so a resumed run can recognise and remove
# leftovers of a killed one (see ``remove_stale_temporaries``).
TEMP_MARKER = ".fastnst-tmp-"


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


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files left in ``folder`` (recursively) by a killed run; return how many."""
    removed = 0
    for tmp in Path(folder).rglob(TEMP_MARKER + "*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed
