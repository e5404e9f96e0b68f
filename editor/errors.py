"""User-facing errors.

Every problem caused by the user's input is raised as an ``EditorError`` whose
message is one line naming the problem and the fix. The CLI prints it without
a traceback and exits non-zero; library callers can catch it.
"""

from __future__ import annotations


class EditorError(Exception):
    """A problem with the user's input that the user can fix."""

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line error in a terminal hides its second half.
        super().__init__(" ".join(message.split()))


class RefusedEdit(EditorError):
    """An edit that this architecture cannot hold exactly."""
