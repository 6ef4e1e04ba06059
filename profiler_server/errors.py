"""One error family for the server's logic modules; the app maps each to an HTTP answer."""

from __future__ import annotations


class ServerError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ServerError):
    status = 400


class NotFound(ServerError):
    status = 404


class Conflict(ServerError):
    status = 409


class Unprocessable(ServerError):
    """Well-formed, but it cannot be done as asked (the message says why)."""

    status = 422


class TooLarge(ServerError):
    status = 413


class TooManyRequests(ServerError):
    """A per-team limit is reached; the message says which and how to get below it."""

    status = 429


# PostgreSQL enforces what SQLite lets through: VARCHAR lengths, 32-bit INTEGER columns and ids,
# no NUL characters in text. Such a value in a request is the client's error, not the server's.
_INPUT_SQLSTATES = {"22001", "22003", "22021", "22P05"}  # too long, out of range, bad characters


def data_error_message(exc: Exception) -> str | None:
    """The 422 message for a database ``DataError`` caused by a value in the request; None for
    any other (e.g. division by zero: a server bug, answered 500 with its traceback logged)."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None and sqlstate not in _INPUT_SQLSTATES:
        return None
    # sqlstate None: the driver refused to send the value at all (psycopg: NUL in a string)
    return f"value not storable: {str(orig).splitlines()[0]}"
