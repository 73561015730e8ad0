"""What the command line does with a bug (any exception that is not bad input): one line, exit code 1.

The full traceback goes to a file, not the terminal, so a user sees what failed and where the details are;
`TRANSFERKIT_DEBUG=1` prints it as well, for developers.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from transferkit._version import __version__

__all__ = ["DEBUG_ENV", "report_internal_error"]

DEBUG_ENV = "TRANSFERKIT_DEBUG"


def report_internal_error(exc: BaseException, argv: list[str]) -> int:
    """Write the traceback to a log file, print one line naming the error and the file, return exit code 1."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    header = f"transferkit {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}, arguments: {argv}\n"
    where = "the traceback could not be written to a file"
    try:
        fd, name = tempfile.mkstemp(prefix="transferkit-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(header + text)
        where = f"the full traceback is in {Path(name)}"
    except OSError:
        pass
    if os.environ.get(DEBUG_ENV):
        print(text, file=sys.stderr, end="")
    message = " ".join(str(exc).split())[:300]
    print(f"transferkit: internal error: {type(exc).__name__}: {message} — this is a bug; {where} "
          f"(or set {DEBUG_ENV}=1 to print it); please report it", file=sys.stderr)
    return 1
