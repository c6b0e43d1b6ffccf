"""Exception types shared by every layer (this module imports nothing of ferkit's)."""

from __future__ import annotations


class UsageError(RuntimeError):
    """A problem the user can fix: a bad option, a missing device or file, a refused output folder.

    The CLI prints its message as one line (no traceback) and exits with status 1; any
    other exception that is not a ValueError or FileNotFoundError is a bug and shows its
    traceback. A RuntimeError, so callers that caught the RuntimeErrors it replaced
    (e.g. "no camera at index 3") keep working.
    """
