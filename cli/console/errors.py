"""The console's errors: each is printed as one line naming the problem, with its exit code, no traceback.

ConsoleError        exit 1: the request was refused, or something failed (the message says what)
└── UsageProblem    exit 2: the command line itself is wrong (a bad option value, a missing argument)
"""

from __future__ import annotations


class ConsoleError(Exception):
    """Something the trader must know or fix; one line, exit 1."""

    exit_code = 1


class UsageProblem(ConsoleError):
    """The command line is wrong; one line, exit 2."""

    exit_code = 2
