"""The dev stack's one exception: something could not start or apply; the message says what and where."""


class StackError(RuntimeError):
    """A part of the stack failed; the message names the part and where to look (a log or a SQL line)."""
