"""The one exception type that means "the user gave us something we cannot use" (`InputError` is the same for
arrays and lists passed in memory, and also a `ValueError`).

The CLI turns a `UserError` into a single line on stderr and exit code 2; anything else is a bug (exit 1).
Messages name the file or value that was received and say how to fix it.
"""

__all__ = ["InputError", "UserError"]


class UserError(Exception):
    """Bad input from the user: a path, a flag value, a data folder, a bundle. The message is shown as is."""


class InputError(UserError, ValueError):
    """A `UserError` about data passed in memory (arrays, lists, labels). It is also a `ValueError`, because
    that is what numpy and scikit-learn callers (and scikit-learn's own estimator checks) expect a function to
    raise for an argument it cannot use."""
