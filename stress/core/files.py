"""Files every layer writes or reads: the one atomic writer, and JSON input read with one-line user errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from stress.core.errors import UserError


def atomic_write(path: Path, write: Callable[[str], None], mode: int | None = None) -> None:
    """Write ``path`` all or nothing: ``write(tmp)`` fills a temporary file beside it, which then replaces it.

    A crash leaves the old file (or none), never half a file. ``mode``: permission bits of the result (the
    temporary file is private to its owner; a shared gallery wants 0o644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json_input(path: Path, what: str) -> Any:
    """A JSON file the user named (``what``: 'scenario file', 'space file', ...); a missing or malformed file is a
    UserError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {str(path)!r} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {str(path)!r} is not valid JSON ({exc})") from None
