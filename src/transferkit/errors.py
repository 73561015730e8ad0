"""The one exception type that means "the user gave us something we cannot use".

The CLI turns a `UserError` into a single line on stderr and exit code 2; anything else is a bug (exit 1).
Messages name the file or value that was received and say how to fix it.
"""

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user: a path, a flag value, a data folder, a bundle. The message is shown as is."""
