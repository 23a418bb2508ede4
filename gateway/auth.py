"""Bearer API keys (TOOLWIRE_API_KEYS or --api-key)."""

from __future__ import annotations

import hmac

from toolwire.errors import RequestError
from toolwire.vocabulary import ErrorCode


class Auth:
    def __init__(self, keys: list[str]):
        self.keys = [k for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, header: str | None) -> RequestError | None:
        if not self.keys:
            return None
        if not header or not header.lower().startswith("bearer "):
            return RequestError(
                "You didn't provide an API key. Provide it as 'Authorization: Bearer YOUR_KEY'.",
                status=401,
                code=ErrorCode.INVALID_API_KEY,
            )
        given = header[7:].strip().encode()
        if any(hmac.compare_digest(given, k.encode()) for k in self.keys):
            return None
        return RequestError(
            "Incorrect API key provided.", status=401, code=ErrorCode.INVALID_API_KEY
        )
