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
