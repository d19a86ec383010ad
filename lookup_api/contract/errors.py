"""The one base of every error reported as a one-line message (``recsys-batch``: ``Error: ...``, exit 1).

Here, in the contract, because the contract raises some of them (the embedded server's) and the
batch may import the contract, never the reverse.
"""


class RecsysError(Exception):
    """A failure with a one-line, user-facing message (bad data, Redis, the lock, parameters...)."""
