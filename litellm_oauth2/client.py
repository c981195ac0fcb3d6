"""The token endpoint client: one RFC 6749 token request per call, with retries for what can heal.

A ``TokenClient`` serves one provider. It builds the request (client credentials or refresh
token grant; basic, post or private_key_jwt client authentication), validates the response
(RFC 6749 §5.1) and turns every failure into ``OAuth2AuthenticationError`` with the provider,
HTTP status and the endpoint's ``error``/``error_description``, never the secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import heapq
import hmac
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, quote_plus, urlencode, urljoin, urlsplit

import requests
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager

from ._discovery import METADATA, metadata_urls, token_endpoint_of
from ._files import FileStates, file_states
from ._fork import reset_in_forked_child
from .config import ProviderSettings, _check_http_url, read_credential_file
from .errors import OAuth2AuthenticationError, OAuth2ConfigurationError
from .metrics import Outcome

__all__ = [
    "Token",
    "TokenClient",
    "jwt_lifetime",
]

logger = logging.getLogger("litellm_oauth2")

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_LIFETIME_SECONDS = 10 * 365 * 86400.0
ASSERTION_LIFETIME_SECONDS = 120
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRYABLE_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and when it stops being usable.

    ``expires_at`` is on the monotonic clock (decisions), ``expires_at_wall`` on the wall clock
    (display, sharing between processes). Both count from when the request was *sent*, so
    network time never leaves a token used with less margin than computed.
    """

    access_token: SecretStr
    token_type: str
    expires_at: float
    expires_at_wall: float
    lifetime: float
    scope: str | None = None
    refresh_token: SecretStr | None = field(default=None, repr=False)

    def expires_in(self) -> float:
        """Seconds left until the endpoint's expiry, on the monotonic clock."""
        return self.expires_at - time.monotonic()


class _TokenRequestFailed(OAuth2AuthenticationError):
    """One attempt failed; ``transient`` (``retryable``) and ``retry_after`` steer the retry policy;
    ``timed_out`` tells a timeout apart from other transient failures in the metrics."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool,
        retry_after: float | None = None,
        timed_out: bool = False,
        original_error: BaseException | None = None,
        http_status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(
            message,
            original_error,
            provider,
            http_status=http_status,
            error=error,
            error_description=error_description,
            transient=retryable,
        )
        self.retry_after = retry_after
        self.timed_out = timed_out


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _TokenRequestFailed) and exc.transient


def _outcome(exc: _TokenRequestFailed) -> Outcome:
    if exc.timed_out:
        return "timeout"
    if exc.error == "invalid_client":
        return "invalid_client"
    return "transient" if exc.transient else "oauth2_error"


class TokenClient:
    """Fetches tokens for one provider; thread-safe, one ``requests.Session`` for connection reuse."""

    def __init__(self, settings: ProviderSettings, *, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._own_session = session is None
        self._session = session or _session_with_deadlines(_key_password(settings))
        # RFC 8705 §2: the certificate is the credential. Its files are watched (a changed file
        # drops the pooled connections, so the next handshake presents the new certificate).
        self._certificate: tuple[str, str] | None = None
        self._certificate_state: FileStates = ()
        if settings.uses_mtls and settings.client_certificate_path is not None:
            key = settings.client_key_path or settings.client_certificate_path
            self._certificate = (settings.client_certificate_path, key)
            self._certificate_state = file_states(self._certificate)
        # With an issuer, the token endpoint is known after discovery (the first attempt).
        self._token_url = settings.token_url
        first_url = settings.token_url or settings.issuer or ""
        self._proxies, self._verify = _environment_settings(first_url, settings.verify)
        self._host: str = urlsplit(first_url).netloc
        self._refresh_token = settings.refresh_token
        self._refresh_lock = threading.Lock()
        # Told the outcome and duration of every token request (each retry is one); set by TokenCache.
        self.on_request: Callable[[Outcome, float], None] | None = None
        self._credentials_lock = threading.Lock()
        self._signing_key: Any = None
        self._key_pem = b""
        if settings.token_endpoint_auth_method == "private_key_jwt":
            self._key_pem = settings.read_private_key()
            self._signing_key = _load_signing_key(settings, self._key_pem)
        self._sent_assertion = ""  # a federated assertion is a credential too: blanked from messages
        self._prepared = self._prepare() if self._token_url else None
        # The client credentials grant with a client secret sends the same body every time: encoded
        # once. A refresh token (it may rotate) or a client assertion (new each time) is encoded per request.
        self._fixed_body = None if self._body_varies() else self._body()
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        """A forked child gets its own connections: sharing a keep-alive one mixes up responses."""
        if self._own_session:
            self._session = _session_with_deadlines(_key_password(self.settings))
            self._prepared = self._prepare() if self._token_url else None
        self._refresh_lock = threading.Lock()
        self._credentials_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenClient(provider={self.settings.provider_name!r}, token_url_host={self._host!r})"

    def fetch(self) -> Token:
        """One token, retrying connection errors, timeouts, 408/429/5xx and transient OAuth2 errors.

        When the endpoint answers ``invalid_client`` and the credential file (``client_secret_path``,
        ``private_key_path``) has changed since it was read, as after a rotation, the new credential
        is taken and the request made once more.

        Raises:
            OAuth2AuthenticationError: no token; ``transient`` when retrying later may help.
        """
        try:
            return self._fetch_with_retries()
        except OAuth2AuthenticationError as exc:
            if exc.error != "invalid_client" or not self._reload_credentials():
                raise
        logger.warning(
            "provider %s: the token endpoint refused the client (invalid_client) and the credential "
            "file has changed: requesting again with the new credential",
            self.settings.provider_name,
        )
        return self._fetch_with_retries()

    def _fetch_with_retries(self) -> Token:
        retry = self.settings.retry
        retrying = Retrying(
            stop=stop_after_attempt(retry.attempts + 1),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=False,
        )
        try:
            return retrying(self._observed_attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, _TokenRequestFailed)
            raise OAuth2AuthenticationError(
                f"{last.message} (gave up after {retry.attempts + 1} attempts)",
                last.original_error or last,
                self.settings.provider_name,
                http_status=last.http_status,
                error=last.error,
                error_description=last.error_description,
                transient=True,
            ) from None
        except _TokenRequestFailed as exc:
            raise OAuth2AuthenticationError(
                exc.message,
                exc.original_error,
                exc.provider,
                http_status=exc.http_status,
                error=exc.error,
                error_description=exc.error_description,
                transient=exc.transient,
            ) from None

    async def afetch(self) -> Token:
        """``fetch`` in a worker thread, so the event loop never waits on the network or a retry sleep."""
        return await asyncio.to_thread(self.fetch)

    def close(self) -> None:
        self._session.close()

    # -- one attempt -------------------------------------------------------------------------

    def _observed_attempt(self) -> Token:
        """``_attempt``, its outcome and duration told to ``on_request``."""
        started = time.monotonic()
        try:
            token = self._attempt()
        except _TokenRequestFailed as exc:
            if self.on_request is not None:
                self.on_request(_outcome(exc), time.monotonic() - started)
            raise
        if self.on_request is not None:
            self.on_request("ok", time.monotonic() - started)
        return token

    def _attempt(self) -> Token:
        prepared = self._prepared or self._discover()
        request = prepared.copy()
        request.prepare_body(self._fixed_body or self._body(), None)
        if self._session.cookies:  # what Session.request would add: cookies the endpoint set
            request.prepare_cookies(self._session.cookies)
        sent_at, sent_at_wall = time.monotonic(), time.time()
        logger.debug(
            "provider %s: requesting token from %s (grant %s, auth %s)",
            self.settings.provider_name,
            self._host,
            "client_credentials" if self._fixed_body else self._grant_type(),
            self.settings.token_endpoint_auth_method,
            extra={"provider": self.settings.provider_name, "event": "token_request_sent"},
        )
        response, body = self._exchange(request, "token", self._host)
        if 300 <= response.status_code < 400:
            raise self._redirected(response.status_code, response.headers.get("Location", ""))
        if response.status_code != 200:
            raise self._error_response(response, body)
        return self._parse_token(body, sent_at, sent_at_wall)

    def _exchange(
        self, request: requests.PreparedRequest, kind: str, where: str
    ) -> tuple[requests.Response, bytes]:
        """Send one request (a ``kind`` request, "token" or "discovery", to ``where``) and read its
        whole body within ``timeout_seconds``; redirects are not followed. Raises ``_TokenRequestFailed``."""
        with _Deadline(self.settings.timeout_seconds) as deadline:
            try:
                # Session.send, not Session.post: the request was prepared once (URL, headers); the
                # per-request merging of settings and environment that post repeats is skipped.
                response = self._session.send(
                    request,
                    timeout=self.settings.timeout_seconds,
                    verify=self._verify,
                    proxies=self._proxies,
                    cert=self._current_certificate(),
                    allow_redirects=False,
                    stream=True,
                )
            except requests.Timeout as exc:
                raise self._failure(f"{kind} request to {where} timed out", exc, timed_out=True) from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                if deadline.expired:
                    raise self._failure(f"{kind} request to {where} timed out", exc, timed_out=True) from None
                raise self._failure(
                    f"could not reach {kind} endpoint {where} ({type(exc).__name__})", exc
                ) from None
            except (requests.RequestException, ValueError) as exc:  # ValueError: e.g. a Location
                # header that does not parse (requests reads it even when not following redirects)
                raise self._failure(
                    f"{kind} request to {where} failed ({type(exc).__name__})", exc, retryable=False
                ) from None
            except OSError as exc:  # from requests itself, e.g. the 'verify' CA bundle has gone
                raise self._failure(
                    f"{kind} request to {where} failed: {_printable(str(exc))}", exc
                ) from None
            with response:
                body = self._read_body(response, deadline, kind, where)
        return response, body

    def _current_certificate(self) -> tuple[str, str] | None:
        """The client certificate files; when they changed since the last request (a rotation:
        another inode, size or time), the pooled connections are dropped so the next TLS
        handshake loads the new ones."""
        if self._certificate is None:
            return None
        state = file_states(self._certificate)
        if state != self._certificate_state:
            with self._credentials_lock:
                if state != self._certificate_state:
                    logger.info(
                        "provider %s: the client certificate files changed; new connections present the new one",
                        self.settings.provider_name,
                    )
                    self._certificate_state = state
                    self._session.close()  # its adapters stay usable: they open new pools
        return self._certificate

    # -- discovery (issuer instead of token_url) ------------------------------------------------

    def _discover(self) -> requests.PreparedRequest:
        """The token endpoint from the issuer's metadata (once per process), and the request
        prepared for it. Raises ``_TokenRequestFailed`` naming the metadata URL."""
        issuer = self.settings.issuer
        assert issuer is not None  # config: exactly one of token_url and issuer
        document = METADATA.get(issuer, str(self._verify), self._fetch_metadata)
        with self._credentials_lock:
            if self._prepared is None:
                try:
                    endpoint = token_endpoint_of(document, issuer, mtls=self.settings.uses_mtls)
                    _check_http_url(endpoint, allow_insecure_http=self.settings.allow_insecure_http)
                except ValueError as exc:
                    raise self._failure(
                        f"the metadata of issuer {issuer} cannot be used: its token_endpoint {exc}",
                        retryable=False,
                    ) from None
                self._token_url, self._host = endpoint, urlsplit(endpoint).netloc
                self._proxies, _ = _environment_settings(endpoint, self.settings.verify)
                self._prepared = self._prepare()
            return self._prepared

    def _fetch_metadata(self) -> dict[str, Any]:
        """GET the issuer's metadata (OpenID Connect location first, then RFC 8414's on 404)."""
        issuer = self.settings.issuer
        assert issuer is not None
        for url in metadata_urls(issuer):
            request = self._session.prepare_request(
                requests.Request("GET", url, headers={"Accept": "application/json"})
            )
            response, body = self._exchange(request, "discovery", url)
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                raise self._failure(
                    f"discovery endpoint {url} answered HTTP {response.status_code}"
                    + ("; redirects are not followed" if 300 <= response.status_code < 400 else ""),
                    retryable=response.status_code in RETRYABLE_STATUS,
                    http_status=response.status_code,
                )
            document = _json_object(body)
            if document is None:
                raise self._failure(f"discovery endpoint {url} sent no JSON object", retryable=False)
            try:
                token_endpoint_of(document, issuer, mtls=self.settings.uses_mtls)
            except ValueError as exc:
                raise self._failure(f"discovery document {url} was refused: {exc}", retryable=False) from None
            return document
        raise self._failure(
            f"discovery found no metadata for issuer {issuer} (HTTP 404 at {' and '.join(metadata_urls(issuer))})",
            retryable=False,
            http_status=404,
        )

    # -- credential files ----------------------------------------------------------------------

    def _reload_credentials(self) -> bool:
        """Read ``client_secret_path`` or ``private_key_path`` again; True when it changed and the
        new credential is in use (a file that cannot be used now is logged and left alone)."""
        s = self.settings
        with self._credentials_lock:
            try:
                if s.client_secret_path is not None and s.token_endpoint_auth_method != "private_key_jwt":
                    secret = read_credential_file(s.client_secret_path)
                    if s.client_secret is not None and hmac.compare_digest(
                        secret.encode(), s.client_secret.get_secret_value().encode()
                    ):
                        return False
                    self._use(s.model_copy(update={"client_secret": SecretStr(secret)}))
                    return True
                if s.token_endpoint_auth_method == "private_key_jwt" and s.private_key_path is not None:
                    pem = s.read_private_key()
                    if hmac.compare_digest(pem, self._key_pem):
                        return False
                    self._signing_key, self._key_pem = _load_signing_key(s, pem), pem
                    return True
            except (OSError, OAuth2ConfigurationError) as exc:
                logger.warning(
                    "provider %s: the credential file cannot be used after invalid_client: %s",
                    s.provider_name,
                    exc.message if isinstance(exc, OAuth2ConfigurationError) else exc,
                )
        return False

    def _use(self, settings: ProviderSettings) -> None:
        """Switch to ``settings`` (a rotated client secret): the prepared parts follow."""
        self.settings = settings
        if self._token_url:
            self._prepared = self._prepare()
        self._fixed_body = None if self._body_varies() else self._body()

    def _federated_assertion(self) -> str:
        """The platform's assertion (RFC 7521 §4.2), read anew for each request since it rotates.

        Raises ``_TokenRequestFailed`` naming the file when it cannot be read, is empty, or is a
        JWT whose ``exp`` has passed: such an assertion is never sent."""
        path = self.settings.client_assertion_path
        assert path is not None  # config: required for client_assertion
        try:
            assertion = read_credential_file(path)
        except OSError as exc:
            raise self._failure(
                f"field 'client_assertion_path' {exc} ('{path}'); no token request was sent", retryable=False
            ) from None
        left = jwt_lifetime(assertion, time.time())
        if left is not None and left <= 0:
            raise self._failure(
                f"field 'client_assertion_path' names a file ('{path}') holding an assertion that "
                f"expired {-left:.0f} s ago; no token request was sent (is the platform still renewing it?)",
                retryable=False,
            )
        self._sent_assertion = assertion
        return assertion

    def _redirected(self, status: int, location: str) -> _TokenRequestFailed:
        """A redirect is refused; the message names where it pointed: another origin by host only,
        this one by the URL to configure instead (never userinfo, query or fragment)."""
        where, fix = "an unknown host", "fix token_url"
        token_url = self._token_url or ""
        configured = urlsplit(token_url)
        try:  # a Location that does not parse is no crash
            target = urlsplit(urljoin(token_url, location)) if location.strip() else None
            same = target is not None and _origin(target) == _origin(configured)
        except ValueError:
            target, same = None, False
        if target is not None and same:
            path = self._shown(target.path) or "/"
            where = f"{path} on the same host"
            fix = f"set token_url to {configured.scheme}://{self._host}{path}"
            if target.path == configured.path + "/":
                fix += " (add the trailing slash)"
        elif target is not None and target.netloc:
            where = self._shown(target.netloc.rpartition("@")[2]) or where
        return self._failure(
            f"token endpoint {self._host} answered HTTP {status} redirecting to {where}; "
            f"redirects are not followed so credentials stay on the configured host: {fix}",
            retryable=False,
            http_status=status,
        )

    def _prepare(self) -> requests.PreparedRequest:
        """The parts of every token request but the body, prepared as ``Session.post`` would (the
        session's default headers included); each attempt sends a copy with its body."""
        s = self.settings
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if s.token_endpoint_auth_method == "client_secret_basic":
            secret = s.client_secret.get_secret_value() if s.client_secret else ""
            headers["Authorization"] = _basic_authorization(
                s.client_id, secret, raw=s.basic_auth_encoding == "raw"
            )
        return self._session.prepare_request(requests.Request("POST", self._token_url, headers=headers))

    def _body_varies(self) -> bool:
        return self._refresh_token is not None or self.settings.token_endpoint_auth_method in (
            "private_key_jwt",
            "client_assertion",
        )

    def _grant_type(self) -> str:
        with self._refresh_lock:
            return "client_credentials" if self._refresh_token is None else "refresh_token"

    def _body(self) -> str:
        """The form-encoded body of one token request; each parameter appears once."""
        s = self.settings
        with self._refresh_lock:
            refresh_token = self._refresh_token
        params: list[tuple[str, str]] = []
        if refresh_token is not None:
            params += [("grant_type", "refresh_token"), ("refresh_token", refresh_token.get_secret_value())]
        else:
            params.append(("grant_type", "client_credentials"))
        if s.scope:
            params.append(("scope", s.scope))
        if s.audience:
            params.append(("audience", s.audience))
        params += [("resource", uri) for uri in s.resource]
        params += list(s.extra_token_params.items())
        if s.token_endpoint_auth_method == "client_secret_post":
            secret = s.client_secret.get_secret_value() if s.client_secret else ""
            params += [("client_id", s.client_id), ("client_secret", secret)]
        elif s.token_endpoint_auth_method == "private_key_jwt":
            params += [
                ("client_id", s.client_id),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", self._client_assertion()),
            ]
        elif s.uses_mtls:  # RFC 8705 §2: the client is named; the handshake authenticated it
            params.append(("client_id", s.client_id))
        elif s.token_endpoint_auth_method == "client_assertion":
            params += [
                ("client_id", s.client_id),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", self._federated_assertion()),
            ]
        return urlencode(params)

    def _client_assertion(self) -> str:
        """RFC 7523 §3 client assertion: iss = sub = client_id, aud = token endpoint, unique jti."""
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": self._token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.settings.key_id} if self.settings.key_id else None
        return jwt.encode(
            claims, self._signing_key, algorithm=self.settings.signing_algorithm, headers=headers
        )

    def _read_body(self, response: requests.Response, deadline: _Deadline, kind: str, where: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise self._failure(
                        f"{kind} endpoint {where} sent a response larger than {MAX_RESPONSE_BYTES} bytes",
                        retryable=False,
                        http_status=response.status_code,
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:
            if deadline.expired:
                raise self._failure(f"{kind} request to {where} timed out", exc, timed_out=True) from None
            raise self._failure(
                f"{kind} endpoint {where} closed the connection mid-response ({type(exc).__name__})", exc
            ) from None
        return b"".join(chunks)

    def _error_response(self, response: requests.Response, body: bytes) -> _TokenRequestFailed:
        """RFC 6749 §5.2: carry ``error`` and ``error_description`` into the exception."""
        error = description = None
        document = _json_object(body)
        if document is not None:
            error = self._shown(document.get("error"))
            description = self._shown(document.get("error_description"))
        status = response.status_code
        detail = f": {error}" if error else ""
        if description:
            detail += f" ({description})"
        if error == "invalid_client" or (error is None and status in (401, 403)):
            hint = self._client_hint()
        else:
            hint = {
                "invalid_scope": "; check the provider's scope",
                "invalid_grant": "; the refresh_token or assertion was refused",
                "unauthorized_client": "; this client may not use this grant type",
            }.get(error or "", "")
        retryable = status in RETRYABLE_STATUS or error in RETRYABLE_ERRORS
        return self._failure(
            f"token endpoint {self._host} answered HTTP {status}{detail}{hint}",
            retryable=retryable,
            retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            http_status=status,
            error=error,
            error_description=description,
        )

    def _client_hint(self) -> str:
        """What to check when the endpoint refused the client's credentials (field names only;
        worded so that LiteLLM's secret redaction, which the proxy applies to errors, leaves it
        whole: no "client_secret" before a space, no "Basic" before a word)."""
        s = self.settings
        if s.token_endpoint_auth_method == "private_key_jwt":
            return "; check client_id, the private key, key_id, signing_algorithm, token_endpoint_auth_method"
        if s.uses_mtls:
            return "; check client_id and that the certificate in client_certificate_path is the one registered for it"
        if s.token_endpoint_auth_method == "client_assertion":
            return (
                "; check client_id and that the identity provider trusts the issuer and subject of "
                "the assertion in client_assertion_path (the federated credential)"
            )
        hint = "; check client_id, client_secret, token_endpoint_auth_method"
        secret = s.client_secret.get_secret_value() if s.client_secret else ""
        encoded = (quote(s.client_id, safe=""), quote(secret, safe=""))
        if s.token_endpoint_auth_method != "client_secret_basic" or encoded == (s.client_id, secret):
            return hint
        if s.basic_auth_encoding == "raw":
            return hint + (
                '; basic_auth_encoding is "raw", but a server following RFC 6749 expects the id and '
                "secret form-encoded (remove the setting)"
            )
        return hint + (
            "; client_secret_basic form-encodes the id and secret first (RFC 6749), which changes "
            'these: if the server expects them as they are, set basic_auth_encoding: "raw"'
        )

    def _parse_token(self, body: bytes, sent_at: float, sent_at_wall: float) -> Token:
        """RFC 6749 §5.1 validation of a successful response."""
        document = _json_object(body)
        if document is None:
            raise self._invalid("the response is not a JSON object")
        access_token = document.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise self._invalid("the response has no access_token")
        # Visible ASCII only (%x21-7E): what can travel in a header. One C-level pass each, not a
        # Python loop over a ~700-character JWT.
        if not (access_token.isascii() and access_token.isprintable()) or " " in access_token:
            raise self._invalid("the access_token contains characters not allowed in an HTTP header")
        token_type = document.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = self._shown(token_type)
            raise self._invalid(
                f"token_type is {shown!r}, not 'Bearer'"
                if shown
                else "the response has no token_type 'Bearer'"
            )
        lifetime = self._lifetime(document.get("expires_in"), access_token, sent_at_wall)
        scope = document.get("scope")
        refresh_token = document.get("refresh_token")
        rotated = SecretStr(refresh_token) if isinstance(refresh_token, str) and refresh_token else None
        if rotated is not None and self._refresh_token is not None:
            with self._refresh_lock:
                self._refresh_token = rotated
        logger.debug(
            "provider %s: token obtained, usable for %.0f s",
            self.settings.provider_name,
            lifetime,
            extra={"provider": self.settings.provider_name, "event": "token_obtained"},
        )
        return Token(
            access_token=SecretStr(access_token),
            token_type="Bearer",
            expires_at=sent_at + lifetime,
            expires_at_wall=sent_at_wall + lifetime,
            lifetime=lifetime,
            scope=scope if isinstance(scope, str) else None,
            refresh_token=rotated,
        )

    def _lifetime(self, expires_in: object, access_token: str, now_wall: float) -> float:
        """``expires_in``, bounded by the access token's own ``exp`` when it is a JWT: a gateway that
        verifies the JWT refuses it at ``exp`` whatever ``expires_in`` said."""
        bound = jwt_lifetime(access_token, now_wall)
        if bound is not None and bound <= 0:
            raise self._invalid("the access_token is a JWT that has already expired")
        if expires_in is None and bound is None:
            return self.settings.default_expires_in
        granted = MAX_LIFETIME_SECONDS if expires_in is None else self._expires_in(expires_in)
        return min(granted, MAX_LIFETIME_SECONDS if bound is None else bound)

    def _expires_in(self, expires_in: object) -> float:
        """``expires_in`` as seconds (a number, or a numeric string as some servers send it), capped;
        raises the invalid-response error for anything else."""
        if isinstance(expires_in, bool):
            raise self._invalid("expires_in is not a number")
        if isinstance(expires_in, int):  # exact, and maybe too large for a float
            expires_in = max(-1, min(expires_in, int(MAX_LIFETIME_SECONDS)))
        if isinstance(expires_in, str):
            try:
                expires_in = float(expires_in.strip())
            except ValueError:
                raise self._invalid("expires_in is not a number") from None
        if not isinstance(expires_in, int | float) or not math.isfinite(expires_in) or expires_in <= 0:
            raise self._invalid("expires_in must be a positive number of seconds")
        return min(float(expires_in), MAX_LIFETIME_SECONDS)

    # -- errors and retry policy ---------------------------------------------------------------

    def _shown(self, value: object) -> str | None:
        """Endpoint-supplied text for a message: credentials this client sends blanked out (an
        endpoint may echo them back), then made printable and bounded."""
        if not isinstance(value, str):
            return None
        s = self.settings
        secret = s.client_secret.get_secret_value() if s.client_secret else ""
        sent = [secret, quote(secret, safe=""), quote_plus(secret)]
        if secret:
            raw = s.basic_auth_encoding == "raw"
            sent.append(_basic_authorization(s.client_id, secret, raw=raw).removeprefix("Basic "))
        with self._refresh_lock:
            refresh_token = self._refresh_token
        if refresh_token is not None:
            sent += [refresh_token.get_secret_value(), quote_plus(refresh_token.get_secret_value())]
        sent.append(self._sent_assertion)
        for credential in sorted(filter(None, sent), key=len, reverse=True):
            value = value.replace(credential, "***")
        return _printable(value)

    def _invalid(self, reason: str) -> _TokenRequestFailed:
        return self._failure(
            f"token endpoint {self._host} sent an invalid token response: {reason}", retryable=False
        )

    def _failure(
        self,
        reason: str,
        original_error: BaseException | None = None,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        timed_out: bool = False,
        http_status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> _TokenRequestFailed:
        return _TokenRequestFailed(
            f"provider '{self.settings.provider_name}': {reason}",
            provider=self.settings.provider_name,
            retryable=retryable,
            retry_after=retry_after,
            timed_out=timed_out,
            original_error=original_error,
            http_status=http_status,
            error=error,
            error_description=error_description,
        )

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff from ``initial_delay``; a ``Retry-After`` wins; capped at ``max_delay``."""
        retry = self.settings.retry
        delay: float = retry.initial_delay * 2 ** (state.attempt_number - 1)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _TokenRequestFailed) and exc.retry_after is not None:
            delay = exc.retry_after
        return min(delay, retry.max_delay)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "provider %s: token request attempt %d of %d failed, retrying in %.2f s: %s",
            self.settings.provider_name,
            state.attempt_number,
            self.settings.retry.attempts + 1,
            wait,
            exc.message if isinstance(exc, _TokenRequestFailed) else type(exc).__name__,
            extra={"provider": self.settings.provider_name, "event": "token_request_failed"},
        )


class _Deadline:
    """Cuts the connection of one token request once ``timeout_seconds`` have passed in total.

    ``timeout`` in requests bounds each socket operation, not the exchange: an endpoint sending a
    byte just before every read timeout would hold the caller, and every caller waiting on the
    same token, indefinitely. At the deadline the watchdog shuts the request's socket down (the
    pools of ``_session_with_deadlines`` record it), which ends any read.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.socket: socket.socket | None = None
        self.expired = False
        self.done = False

    def __enter__(self) -> _Deadline:
        _attempt_deadline.current = self
        _WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _attempt_deadline.current = None
        self.done = True

    def cut(self) -> bool:
        """Called by the watchdog at or after ``at``: whether it is settled (cut, or over)."""
        self.expired = True
        if self.socket is None:  # not connected yet: the watchdog comes back shortly
            return self.done
        with suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        return True


class _Watchdog:
    """One daemon thread watching every token request's ``_Deadline``, so a request starts no thread.

    It ends after ``WATCHDOG_IDLE_SECONDS`` without a request to watch, and the next request starts
    it again; a forked child starts its own.
    """

    def __init__(self) -> None:
        self._after_fork_in_child()
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._deadlines: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        """Raises ``RuntimeError`` when the watchdog is not running and no thread can start."""
        with self._lock:
            heapq.heappush(self._deadlines, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name="litellm-oauth2-deadline", daemon=True)
                thread.start()
                self._thread = thread
            elif self._deadlines[0][2] is deadline:
                self._wake.set()

    def _serve(self) -> None:
        idle_since = time.monotonic()
        while True:
            due: list[_Deadline] = []
            with self._lock:
                now = time.monotonic()
                watched = bool(self._deadlines)
                while self._deadlines and (self._deadlines[0][2].done or self._deadlines[0][0] <= now):
                    deadline = heapq.heappop(self._deadlines)[2]
                    if not deadline.done:
                        due.append(deadline)
                if watched:
                    idle_since = now
                elif now - idle_since >= WATCHDOG_IDLE_SECONDS:
                    self._thread = None
                    return
                wait = self._deadlines[0][0] - now if self._deadlines else WATCHDOG_IDLE_SECONDS
                self._wake.clear()
            for deadline in due:
                if not deadline.cut():
                    self._recheck(deadline, now + 0.05)
            self._wake.wait(max(0.0, min(wait, WATCHDOG_IDLE_SECONDS)))

    def _recheck(self, deadline: _Deadline, at: float) -> None:
        with self._lock:
            heapq.heappush(self._deadlines, (at, next(self._order), deadline))
            self._wake.set()


WATCHDOG_IDLE_SECONDS = 2.0
_WATCHDOG = _Watchdog()
_attempt_deadline = threading.local()


def _track(connection: Any) -> None:
    """Called by the pools right before a request is sent: hand its socket to the deadline."""
    deadline = getattr(_attempt_deadline, "current", None)
    if deadline is not None:
        if getattr(connection, "sock", None) is None:
            connection.connect()  # early, as urllib3 does for HTTPS, so the socket is known
        deadline.socket = connection.sock


class _TrackedHTTPPool(HTTPConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        super()._validate_conn(conn)
        _track(conn)


class _TrackedHTTPSPool(HTTPSConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        super()._validate_conn(conn)
        _track(conn)


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with pools that tell the running ``_Deadline`` which connection it uses,
    and the password of the client certificate's key (requests has no parameter for it)."""

    def __init__(self, key_password: str | None = None) -> None:
        self._key_password = key_password
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._key_password is not None:
            kwargs["key_password"] = self._key_password
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS, whose pools are its own
            manager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}
        return manager


def _environment_settings(url: str, verify: bool | str) -> tuple[dict[str, str], bool | str]:
    """The proxy and CA bundle that requests would read from the environment, read once.

    With ``trust_env`` a session re-reads the environment (and ``~/.netrc``) on every request:
    about a sixth of a token request's CPU, spent while other threads wait for the GIL. The
    variables are the same ones (``HTTP(S)_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``), read when the provider is loaded; ``~/.netrc`` is never read, so the
    configured client authentication is the only credential sent.
    """
    proxies: dict[str, str] = requests.utils.get_environ_proxies(url)
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return proxies, verify


def _session_with_deadlines(key_password: str | None = None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # read once by _environment_settings
    adapter = _DeadlineAdapter(key_password)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _key_password(settings: ProviderSettings) -> str | None:
    """The client key's password in clear, for the TLS layer only; "" rather than None for an
    mTLS client, since OpenSSL would otherwise ask for a password on the terminal."""
    if not settings.uses_mtls:
        return None
    return settings.client_key_password.get_secret_value() if settings.client_key_password else ""


def _basic_authorization(client_id: str, client_secret: str, *, raw: bool = False) -> str:
    """RFC 6749 §2.3.1: both parts form-urlencoded before base64, unless ``raw`` (some servers want that)."""
    if not raw:
        # %20 rather than "+" for a space: servers decoding with unquote (Authlib) and with
        # unquote_plus (the form rules) both read it back as a space.
        client_id, client_secret = quote(client_id, safe=""), quote(client_secret, safe="")
    credentials = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def jwt_lifetime(token: str, now_wall: float) -> float | None:
    """Seconds a JWT access token lasts from now by its own claims (read unverified, only to
    schedule a refresh); None when it is no JWT or has no usable ``exp``.

    Without ``iat``: ``exp`` less this machine's wall clock. With ``iat``, the token was issued at
    ``iat`` (a whole-second ``iat``: within the second after it), so ``now_wall`` is clamped into
    that interval first: with clocks in step that is exactly ``exp - now_wall`` (no second lost to
    the truncation), and a clock here minutes off neither stretches the token nor voids it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    exp, iat = _numeric_date(claims.get("exp")), _numeric_date(claims.get("iat"))
    if exp is None:
        return None
    if iat is None:
        return exp - now_wall
    issued = min(max(now_wall, iat), iat + (1.0 if iat.is_integer() else 0.0))
    return exp - issued


def _numeric_date(value: object) -> float | None:
    """An RFC 7519 NumericDate claim as a finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return seconds if math.isfinite(seconds) else None


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL, the port made explicit; raises ValueError for a bad port."""
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _printable(value: object, limit: int = 200) -> str | None:
    """An endpoint-supplied string made safe for a log line or message: printable, bounded."""
    if not isinstance(value, str) or not value:
        return None
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value)
    return cleaned[:limit] + ("..." if len(cleaned) > limit else "")


def _load_signing_key(settings: ProviderSettings, pem: bytes) -> Any:
    """Load and check the private_key_jwt key once, so a bad key fails at start-up with a clear message."""
    name = settings.provider_name
    try:
        import jwt  # noqa: F401 - PyJWT signs the assertion
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
    except ImportError:
        raise OAuth2ConfigurationError(
            f"provider '{name}': private_key_jwt needs PyJWT and cryptography; "
            "install them with: pip install PyJWT cryptography (or, in a clone of litellm-oauth2: pip install -e '.[jwt]')",
            provider=name,
        ) from None
    field_name = "private_key" if settings.private_key is not None else "private_key_path"
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise OAuth2ConfigurationError(
            f"provider '{name}': field '{field_name}' is not an unencrypted PEM private key "
            f"({type(exc).__name__})",
            provider=name,
        ) from None
    expected = rsa.RSAPrivateKey if settings.signing_algorithm == "RS256" else ec.EllipticCurvePrivateKey
    if not isinstance(key, expected):
        raise OAuth2ConfigurationError(
            f"provider '{name}': field '{field_name}' holds a key that cannot sign "
            f"{settings.signing_algorithm}; "
            "use an RSA key for RS256 or a P-256 EC key for ES256 (signing_algorithm)",
            provider=name,
        )
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise OAuth2ConfigurationError(
            f"provider '{name}': field '{field_name}' is an EC key on {key.curve.name}; ES256 needs P-256",
            provider=name,
        )
    return key
