"""What a request answers with when it cannot be served: a Wyoming `error` event."""

from __future__ import annotations

from wyoming.error import Error


class RequestError(Exception):
    """A request that cannot be served; `code` is machine-readable (Wyoming's `error.code`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def event(self):  # type: ignore[no-untyped-def]
        return Error(text=self.message, code=self.code).event()
