"""Exception hierarchy: every failure the plugin raises is an ``OAuth2Error``.

The ``ValueError``/``RuntimeError`` bases keep code that caught the plain exceptions of
earlier in-house token helpers working.
"""

from __future__ import annotations

from collections.abc import Sequence


class OAuth2Error(Exception):
    """Base class. ``provider`` names the configured provider, ``original_error`` the cause."""

    def __init__(
        self,
        message: str,
        original_error: BaseException | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.original_error = original_error
        self.provider = provider

    def __str__(self) -> str:
        return self.message


class OAuth2ConfigurationError(OAuth2Error, ValueError):
    """The configuration cannot be used: bad file, missing field, unknown provider.

    ``field`` names the field (or key) at fault, when there is one. ``problems`` lists every
    problem found, each an error of its own, so one run shows everything to fix; an error
    that stands alone lists itself.
    """

    field: str | None = None
    _problems: tuple[OAuth2ConfigurationError, ...] = ()

    def __init__(
        self,
        message: str,
        original_error: BaseException | None = None,
        provider: str | None = None,
        *,
        field: str | None = None,
        problems: Sequence[OAuth2ConfigurationError] = (),
    ) -> None:
        super().__init__(message, original_error, provider)
        self.field = field
        self._problems = tuple(problems)

    @property
    def problems(self) -> tuple[OAuth2ConfigurationError, ...]:
        return self._problems or (self,)


class OAuth2ValidationError(OAuth2ConfigurationError):
    """A field has a value that is not allowed (URL, scope, number range...)."""


class OAuth2AuthenticationError(OAuth2Error, RuntimeError):
    """No token could be obtained: network failure, rejected credentials, bad endpoint response.

    ``transient`` is True when the failure may heal by itself (endpoint unreachable, timeout,
    408/429/5xx, ``temporarily_unavailable``): trying again later may succeed. False when the same
    request will be refused until the configuration or the client's registration changes
    (``invalid_client``, ``invalid_scope``, a redirect, an invalid token response).
    """

    def __init__(
        self,
        message: str,
        original_error: BaseException | None = None,
        provider: str | None = None,
        *,
        http_status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        transient: bool = True,
    ) -> None:
        super().__init__(message, original_error, provider)
        self.http_status = http_status
        self.error = error
        self.error_description = error_description
        self.transient = transient


__all__ = [
    "OAuth2AuthenticationError",
    "OAuth2ConfigurationError",
    "OAuth2Error",
    "OAuth2ValidationError",
]
