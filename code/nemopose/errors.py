"""Expected mistakes: errors whose message names the problem and the fix.

Entry points (:func:`nemopose.cli.run`) print such an error as one line ``error: ...`` and
exit with status 2, without a traceback (``NEMOPOSE_DEBUG=1`` shows it). Anything else is a
bug and keeps its traceback. Library modules subclass :class:`NemoPoseError` together with the
built-in type that fits (``ValueError``, ``FileNotFoundError``), so callers can catch either.
"""

from __future__ import annotations


class NemoPoseError(Exception):
    """An expected mistake (bad input, missing data, a setting that cannot work)."""


class UsageError(NemoPoseError, ValueError):
    """A bad option or variable value."""


class DataNotFound(NemoPoseError, FileNotFoundError):
    """Prepared data, a dataset or a file the run needs is not there."""
