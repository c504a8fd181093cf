"""One exception type for every problem a user can cause.

The CLI turns a :class:`CaloquantError` into a single line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class CaloquantError(Exception):
    """Bad input or an impossible request, explained in one line: line breaks in it (user text
    quoted in the message, e.g. an option value with a newline) are shown escaped."""

    def __str__(self) -> str:
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


def reason(exc: BaseException) -> str:
    """An exception's message as a whole clause for a one-line error: its first line up to the
    end of its first sentence (libraries append advice and internals after it), never cut
    mid-sentence; the exception's type when it says nothing."""
    first = (str(exc).strip().splitlines() or [""])[0].strip()
    if not first:
        return type(exc).__name__
    head, sep, _ = first.partition(". ")
    return head if sep else first.rstrip(".")
