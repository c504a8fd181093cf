"""One exception type for every problem a user can cause.

The CLI turns a :class:`CaloquantError` into a single line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class CaloquantError(Exception):
    """Bad input or an impossible request, explained in one line."""
