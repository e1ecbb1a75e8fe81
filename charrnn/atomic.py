"""Writing a file all or nothing: the bytes go to a temporary name in the same folder, which is renamed over
the target only once complete, so a reader, a failure or a kill sees the old file or the new one, never
half of one. (checkpoint.save adds fsyncs, since a checkpoint must also survive a power cut.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from charrnn.errors import CharRNNError


def replace_with(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` makes the file at a temporary path (it keeps `path`'s suffix, for writers that read
    the format from it); then it replaces `path`. A disk error becomes one CharRNNError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CharRNNError(
            f"could not write {path}: {e.strerror or e} (free some disk space, or choose another path)"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
