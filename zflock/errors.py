"""The root of zflock's exceptions.

Every error zflock raises on purpose derives from ZflockError, so the CLI can
print it as one line and exit 1 instead of showing a traceback.
"""


class ZflockError(Exception):
    """An error with a message meant for the operator."""


class UsageError(ZflockError):
    """Bad input from the operator (exit code 2 in the CLI)."""
