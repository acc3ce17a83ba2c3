"""The console: the framework's own lines and the progress bar on the terminal, everything else in a file.

Inside `quiet(log_dir)`, file descriptors 1 and 2 point at `log_dir/console.log`, so whatever other
code writes there (library warnings and logging, progress bars of model loads, C-level messages,
the output Ray forwards from its workers, W&B's banner) lands in the file. The framework writes its
lines with `say` and draws its bar on `stream()`, a copy of the terminal taken before the switch.
With `verbose=True` nothing moves: every line shows, as before.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

LOG_FILE = "console.log"
_terminal: TextIO | None = None  # the terminal while quiet; None means sys.stdout is it


def stream() -> TextIO:
    """Where the framework's lines and bar go."""
    return _terminal if _terminal is not None else sys.stdout


def say(message: str) -> None:
    """One framework line on the terminal, above the progress bar."""
    tqdm.write(str(message), file=stream())
    stream().flush()


def _fd_of(text_stream) -> int | None:
    try:
        return text_stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None  # replaced by a capturing object (pytest's capsys): it is not on a descriptor


@contextmanager
def quiet(log_dir: Path, verbose: bool = False) -> Iterator[Path | None]:
    """Route descriptors 1 and 2 to `log_dir/console.log` for the block; yields the file (None if verbose)."""
    global _terminal
    if verbose or _terminal is not None:  # verbose, or already quiet (a stage inside a run)
        yield None
        return
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_FILE
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    on_descriptor = _fd_of(sys.stdout) == 1
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1) if on_descriptor else sys.stdout
    with path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    _terminal = terminal
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _terminal = None
        if terminal is not sys.stdout:
            terminal.close()
