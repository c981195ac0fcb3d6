"""The exception hierarchy: what each class is-a, and what each instance carries."""

from __future__ import annotations

import pickle

import pytest

import litellm_oauth2
from litellm_oauth2 import errors
from litellm_oauth2.errors import (
    OAuth2AuthenticationError,
    OAuth2ConfigurationError,
    OAuth2Error,
    OAuth2ValidationError,
)

ALL_ERRORS = [OAuth2Error, OAuth2ConfigurationError, OAuth2ValidationError, OAuth2AuthenticationError]


@pytest.mark.parametrize(
    ("cls", "base", "expected"),
    [
        (OAuth2Error, Exception, True),
        (OAuth2Error, ValueError, False),
        (OAuth2Error, RuntimeError, False),
        (OAuth2ConfigurationError, OAuth2Error, True),
        (OAuth2ConfigurationError, ValueError, True),
        (OAuth2ConfigurationError, RuntimeError, False),
        (OAuth2ConfigurationError, OAuth2ValidationError, False),
        (OAuth2ValidationError, OAuth2ConfigurationError, True),
        (OAuth2ValidationError, OAuth2Error, True),
        (OAuth2ValidationError, ValueError, True),
        (OAuth2ValidationError, RuntimeError, False),
        (OAuth2ValidationError, OAuth2AuthenticationError, False),
        (OAuth2AuthenticationError, OAuth2Error, True),
        (OAuth2AuthenticationError, RuntimeError, True),
        (OAuth2AuthenticationError, ValueError, False),
        (OAuth2AuthenticationError, OAuth2ConfigurationError, False),
    ],
)
def test_hierarchy(cls: type[Exception], base: type[Exception], expected: bool) -> None:
    assert issubclass(cls, base) is expected


@pytest.mark.parametrize(
    ("cls", "legacy"),
    [
        (OAuth2ConfigurationError, ValueError),
        (OAuth2ValidationError, ValueError),
        (OAuth2AuthenticationError, RuntimeError),
    ],
)
def test_legacy_except_clauses_still_catch(cls: type[OAuth2Error], legacy: type[Exception]) -> None:
    with pytest.raises(legacy) as info:
        raise cls("boom", provider="acme_gw")
    assert info.value.provider == "acme_gw"  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_positional_arguments(cls: type[OAuth2Error]) -> None:
    cause = ConnectionError("refused")
    error = cls("token endpoint unreachable", cause, "acme_gw")
    assert error.message == "token endpoint unreachable"
    assert error.original_error is cause
    assert error.provider == "acme_gw"
    assert str(error) == "token endpoint unreachable"
    assert error.args == ("token endpoint unreachable",)


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_keyword_arguments_and_defaults(cls: type[OAuth2Error]) -> None:
    error = cls(message="bad config")
    assert (error.message, error.original_error, error.provider) == ("bad config", None, None)
    assert str(error) == "bad config"
    cause = OSError(13, "Permission denied")
    error = cls("bad config", original_error=cause, provider="p")
    assert (error.original_error, error.provider) == (cause, "p")


def test_str_is_the_message_even_if_args_change() -> None:
    error = OAuth2Error("the message")
    error.args = ("something else",)
    assert str(error) == "the message"


def test_original_error_is_independent_of_cause() -> None:
    cause = TimeoutError("read timed out")
    with pytest.raises(OAuth2Error) as info:
        try:
            raise cause
        except TimeoutError as exc:
            raise OAuth2AuthenticationError("timed out", exc, "acme_gw") from None
    assert info.value.original_error is cause
    assert info.value.__cause__ is None


def test_authentication_error_details() -> None:
    error = OAuth2AuthenticationError(
        "client rejected",
        None,
        "acme_gw",
        http_status=401,
        error="invalid_client",
        error_description="Client authentication failed",
    )
    assert (error.http_status, error.error, error.error_description) == (
        401,
        "invalid_client",
        "Client authentication failed",
    )
    assert error.provider == "acme_gw"
    bare = OAuth2AuthenticationError("no token")
    assert (bare.http_status, bare.error, bare.error_description) == (None, None, None)
    assert error.transient is True and bare.transient is True  # unknown: may heal
    assert OAuth2AuthenticationError("refused", transient=False).transient is False


def test_authentication_error_details_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        OAuth2AuthenticationError("m", None, "p", 401)  # type: ignore[misc]


@pytest.mark.parametrize(
    "error",
    [
        OAuth2Error("m", None, "p"),
        OAuth2ConfigurationError("m", ValueError("v"), "p"),
        OAuth2ValidationError("m", provider="p"),
        OAuth2AuthenticationError("m", None, "p", http_status=503, error="temporarily_unavailable"),
        OAuth2AuthenticationError("m", None, "p", http_status=401, error="invalid_client", transient=False),
    ],
    ids=lambda error: type(error).__name__,
)
def test_pickle_round_trip(error: OAuth2Error) -> None:
    # Errors cross process boundaries (proxy workers, multiprocessing pools).
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.message, copy.provider, str(copy)) == (error.message, error.provider, str(error))
    assert repr(copy.original_error) == repr(error.original_error)
    if isinstance(error, OAuth2AuthenticationError):
        assert isinstance(copy, OAuth2AuthenticationError)
        assert (copy.http_status, copy.error, copy.transient) == (
            error.http_status,
            error.error,
            error.transient,
        )


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_exported_from_package(cls: type[OAuth2Error]) -> None:
    assert getattr(litellm_oauth2, cls.__name__) is cls
    assert cls.__name__ in errors.__all__
    assert cls.__name__ in litellm_oauth2.__all__
