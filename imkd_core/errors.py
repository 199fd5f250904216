"""User errors: the one convention every command-line tool follows (train/ scripts, imkd_ros CLIs).

A mistake the user can fix (a bad flag, a missing or corrupt input file, an unwritable output
folder, a broken dataset table) is a `UserError` (or an OSError about a file) and ends the tool
with ONE line on stderr, `<prog>: error: <message>`, and exit status 2, as argparse does for a bad
flag. Anything else is a bug and keeps its traceback. The library raises; only `main()`s catch,
through the `cli_main` decorator, so no script carries its own copy of the handler.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

EXIT_USER_ERROR = 2  # argparse's status for a usage error

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """An error in what the user asked for or handed in (not a bug): reported as one line, exit 2.

    Domain errors derive from it as well as from their usual built-in base (CheckpointError is a
    RuntimeError, ConfigError a ValueError), so library callers catch them as before."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its non-empty lines joined by '; ')."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # e.g. "/ro/out: Permission denied"
    else:
        text = str(exc) or type(exc).__name__
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    if any(s.startswith("Original Traceback") for s in lines):  # re-raised from a DataLoader worker:
        name, sep, message = lines[-1].partition(": ")    # keep the original's message
        lines = [message if sep and name.replace(".", "").replace("_", "").isalnum() else lines[-1]]
    return "; ".join(lines)


def fail(message: str | BaseException, prog: str | None = None) -> None:
    """Print `<prog>: error: <message>` (one line) to stderr and exit with status 2."""
    prog = prog or os.path.basename(sys.argv[0]) or "imkd"
    text = one_line(message) if isinstance(message, BaseException) else one_line(UserError(message))
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def cli_main(func: F | None = None, *, also: tuple[type[BaseException], ...] = (), prog: str | None = None) -> Any:
    """Decorator for a tool's `main()`: a UserError, an OSError or one of the `also` types becomes
    `fail(...)` (one line, exit 2); other exceptions propagate with their traceback.

        @cli_main
        def main(argv=None): ...
        @cli_main(also=(BagError,), prog="imkd-replay")  # the tool's own error types; its name
        def main(argv=None): ...

    (prog defaults to the script's file name, as argparse's does.)
    """
    caught = (UserError, OSError, *also)

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except caught as exc:
                fail(exc, prog)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create folder `path` (and its parents) and prove it is writable by creating and removing a
    file in it, before any long work starts; UserError naming the flag and the reason otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path} is not a writable folder: {exc.strerror or exc}") from exc
    return path
