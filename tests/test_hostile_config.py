"""Hostile configuration files: property-based extensions of the fuzzing in ``test_config.py``.

``test_config.py`` fuzzes document *values*; this file fuzzes the *file*: bytes that are not
UTF-8, files around and beyond the size limit, nesting of any shape and depth, duplicated keys
at every level (JSON and YAML, including YAML keys that only collide once turned into provider
names), and paths that are symlinks to things that cannot be read.

Properties: loading never raises anything but ``OAuth2ConfigurationError``, names the file,
never echoes a secret from the file, and finishes in bounded time.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from litellm_oauth2.client import TokenClient
from litellm_oauth2.config import MAX_CONFIG_BYTES, MAX_JSON_DEPTH, OAuth2Config, load_config
from litellm_oauth2.errors import OAuth2AuthenticationError, OAuth2ConfigurationError
from litellm_oauth2.testing import TokenServer

SECRET = "Hx9-KNOWN-hostile-config-secret"
HEADER_SECRET = "KNOWN-subscription-key-77Qe"
FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW = settings(FAST, max_examples=12)  # examples that write or parse megabytes
LOAD_SECONDS = 20.0  # a generous upper bound for loading any file up to MAX_CONFIG_BYTES (JSON)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


# -- documents and their serialisation -----------------------------------------------------------


def provider_settings(index: int) -> dict[str, Any]:
    return {
        "client_id": f"client-{index}",
        "client_secret": f"{SECRET}-{index}",
        "token_url": f"https://idp{index}.example.com/oauth2/token",
        "scope": "chat.read chat.write",
        "headers": {"Ocp-Apim-Subscription-Key": HEADER_SECRET, "X-Team": "blue"},
        "extra_token_params": {"tenant": "t1", "region": "eu"},
        "retry": {"attempts": 2, "initial_delay": 0.5, "max_delay": 5},
        "timeout_seconds": 5,
    }


def valid_config(count: int) -> dict[str, Any]:
    return {
        "oauth2_providers": {f"gw_{i}": provider_settings(i) for i in range(count)},
        "cache": {"type": "memory"},
    }


def secrets_in(text: str) -> list[str]:
    return [
        label
        for label, value in [("client secret", SECRET), ("header value", HEADER_SECRET)]
        if value in text
    ]


def full_text(error: BaseException) -> str:
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


def to_json(
    value: Any, duplicate: tuple[str, ...] | None = None, path: tuple[str, ...] = (), escape: bool = False
) -> str:
    """JSON text; the object at ``duplicate`` (a key path) gets its first key written twice."""
    if isinstance(value, dict):
        pairs = [
            (json.dumps(str(k)), to_json(v, duplicate, (*path, str(k)), escape)) for k, v in value.items()
        ]
        if duplicate == path and pairs:
            key = str(next(iter(value)))
            spelled = "".join(f"\\u{ord(ch):04x}" for ch in key) if escape else key
            pairs.append((f'"{spelled}"', pairs[0][1]))
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v, duplicate, path, escape) for v in value) + "]"
    return json.dumps(value)


def to_yaml(
    value: Any, duplicate: tuple[str, ...] | None = None, path: tuple[str, ...] = (), indent: int = 0
) -> str:
    """Block-style YAML (scalars JSON-quoted, which YAML reads alike); same duplication as ``to_json``."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        lines = []
        items = list(value.items())
        if duplicate == path:
            items.append(items[0])
        for key, item in items:
            if isinstance(item, dict | list) and item:
                lines.append(
                    f"{pad}{json.dumps(str(key))}:\n"
                    + to_yaml(item, duplicate, (*path, str(key)), indent + 2)
                )
            else:
                lines.append(f"{pad}{json.dumps(str(key))}: {json.dumps(item, ensure_ascii=False)}\n")
        return "".join(lines)
    if isinstance(value, list):
        return "".join(f"{pad}- {json.dumps(item, ensure_ascii=False)}\n" for item in value)
    return pad + json.dumps(value, ensure_ascii=False) + "\n"


def load_outcome(path: Path) -> tuple[OAuth2Config | OAuth2ConfigurationError, float]:
    """Load ``path``; any exception but ``OAuth2ConfigurationError`` fails the test, saying which."""
    started = time.monotonic()
    try:
        result: OAuth2Config | OAuth2ConfigurationError = load_config(path)
    except OAuth2ConfigurationError as error:
        result = error
    except BaseException as exc:  # the property is about exactly what escapes
        pytest.fail(
            f"loading {path.name} let {type(exc).__name__} escape instead of OAuth2ConfigurationError: {exc!r}"
        )
    elapsed = time.monotonic() - started
    if isinstance(result, OAuth2ConfigurationError):
        leaked = secrets_in(full_text(result))
        assert not leaked, f"the error for {path.name} leaked the {leaked} from the file: {result}"
    return result, elapsed


def assert_error(outcome: object, path: Path, fragment: str) -> OAuth2ConfigurationError:
    assert isinstance(outcome, OAuth2ConfigurationError), (
        f"{path.name} loaded although it should fail with {fragment!r}: the bad file would go unnoticed"
    )
    assert str(path) in str(outcome), f"the error does not name the file, so nobody can find it: {outcome}"
    assert fragment in str(outcome), f"expected {fragment!r} in the error, got: {outcome}"
    return outcome


# -- not UTF-8 -----------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\x80",  # continuation byte alone
    b"\xff",
    b"\xfe\xff",  # a UTF-16 BOM
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong, three bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xe2\x82",  # truncated sequence
    b"\xf8\x88\x80\x80\x80",  # five-byte form
]


@FAST
@given(
    providers=st.integers(1, 3),
    corruption=st.sampled_from(INVALID_UTF8),
    where=st.floats(0, 1),
    as_yaml=st.booleans(),
    bom=st.booleans(),
)
def test_bytes_that_are_not_utf8_anywhere_are_a_configuration_error(
    scratch: Path, providers: int, corruption: bytes, where: float, as_yaml: bool, bom: bool
) -> None:
    document = valid_config(providers)
    text = to_yaml(document) if as_yaml else to_json(document)
    raw = text.encode()
    position = int(where * len(raw))
    prefix = b"\xef\xbb\xbf" if bom else b""
    path = scratch / ("bad.yaml" if as_yaml else "bad.json")
    path.write_bytes(prefix + raw[:position] + corruption + raw[position:])
    outcome, _ = load_outcome(path)
    error = assert_error(outcome, path, "is not UTF-8 text")
    offset = int(re.search(r"bad byte at offset (\d+)", str(error)).group(1))  # type: ignore[union-attr]
    assert offset <= position + len(corruption), f"offset {offset} points past the bad bytes at {position}"


@FAST
@given(
    encoding=st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32", "shift_jis", "koi8-r"]),
    word=st.sampled_from(["café", "Zürich", "naïve", "東京", "привет"]),
    as_yaml=st.booleans(),
)
def test_files_in_other_encodings_are_a_configuration_error(
    scratch: Path, encoding: str, word: str, as_yaml: bool
) -> None:
    document = valid_config(1)
    document["oauth2_providers"]["gw_0"]["client_id"] = word
    text = to_yaml(document) if as_yaml else json.dumps(document, ensure_ascii=False)
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    path = scratch / ("enc.yaml" if as_yaml else "enc.json")
    path.write_bytes(raw)
    outcome, _ = load_outcome(path)
    # Either refused as not UTF-8, or (bytes that happen to be UTF-8) refused while parsing.
    assert isinstance(outcome, OAuth2ConfigurationError), f"a {encoding} file loaded as if it were UTF-8"
    assert str(path) in str(outcome), f"the error does not name the file: {outcome}"


# -- huge ----------------------------------------------------------------------------------------


@SLOW
@given(excess=st.integers(-64, 64), split=st.floats(0, 1), filler=st.sampled_from([" ", "\n", "\t", "\r\n"]))
def test_size_limit_is_exact_wherever_the_padding_is(
    scratch: Path, excess: int, split: float, filler: str
) -> None:
    core = to_json(valid_config(2))
    room = MAX_CONFIG_BYTES + excess - len(core)
    padding = (filler * (room // len(filler) + 1))[:room]
    before = padding[: int(split * len(padding))]
    while before.endswith("\r") and len(before) < len(padding):
        before = padding[: len(before) + 1]  # keep CRLF pairs whole
    after = padding[len(before) :]
    path = scratch / "huge.json"
    path.write_text(before + core + after, newline="")
    size = path.stat().st_size
    outcome, elapsed = load_outcome(path)
    if size > MAX_CONFIG_BYTES:
        assert_error(outcome, path, f"larger than {MAX_CONFIG_BYTES} bytes")
    else:
        assert isinstance(outcome, OAuth2Config), (
            f"a valid {size}-byte file within the limit was refused: {outcome}"
        )
        assert len(outcome.oauth2_providers) == 2
    assert elapsed < LOAD_SECONDS, f"loading a {size}-byte file took {elapsed:.1f} s"


@SLOW
@given(
    field=st.sampled_from(
        ["client_secret", "client_id", "scope", "token_url", "audience", "header", "resource"]
    ),
    size=st.integers(512 * 1024, MAX_CONFIG_BYTES - 4096),
)
def test_one_huge_value_loads_or_fails_cleanly_without_echo(scratch: Path, field: str, size: int) -> None:
    document = valid_config(1)
    settings = document["oauth2_providers"]["gw_0"]
    huge = SECRET + "x" * size
    if field == "header":
        settings["headers"]["X-Huge"] = huge
    elif field == "resource":
        settings["resource"] = [f"https://r{i}.example.com" for i in range(size // 28)]
    elif field in ("token_url", "audience"):
        settings[field] = "https://" + "a" * size + ".example.com/token"
    elif field == "scope":
        settings["scope"] = " ".join(["s"] * (size // 2))
    else:
        settings[field] = huge
    path = scratch / "value.json"
    path.write_text(json.dumps(document))
    outcome, elapsed = load_outcome(path)
    if isinstance(outcome, OAuth2ConfigurationError):
        assert "x" * 300 not in str(outcome), f"the error echoes the huge {field} value"
    assert elapsed < LOAD_SECONDS, f"a {size}-byte {field} took {elapsed:.1f} s to load"


@SLOW
@given(count=st.integers(1000, 16000))
def test_thousands_of_providers_load_in_bounded_time(scratch: Path, count: int) -> None:
    minimal = {"client_id": "c", "client_secret": SECRET, "token_url": "https://idp.example.com/t"}
    path = scratch / "many.json"
    path.write_text(json.dumps({"oauth2_providers": {f"gw_{i}": minimal for i in range(count)}}))
    outcome, elapsed = load_outcome(path)
    assert isinstance(outcome, OAuth2Config), f"{count} valid providers refused: {outcome}"
    assert len(outcome.oauth2_providers) == count, "providers were lost while loading"
    assert elapsed < LOAD_SECONDS, f"{count} providers took {elapsed:.1f} s to load"


def test_an_endless_device_is_refused_before_any_read(tmp_path: Path) -> None:
    path = tmp_path / "zero.json"
    path.symlink_to("/dev/zero")
    outcome, elapsed = load_outcome(path)
    assert_error(outcome, path, "is not a regular file")
    assert elapsed < LOAD_SECONDS


# -- deeply nested -------------------------------------------------------------------------------

nest_kinds = st.lists(st.sampled_from(["list", "object"]), min_size=1, max_size=4)
NEST_SITES = ["top", "providers", "provider", "headers", "retry", "extra_token_params", "cache"]


def nested(depth: int, kinds: list[str]) -> tuple[str, str]:
    """Opening and closing text of ``depth`` levels, cycling through ``kinds``."""
    opening, closing = [], []
    for level in range(depth):
        if kinds[level % len(kinds)] == "list":
            opening.append("[")
            closing.append("]")
        else:
            opening.append(f'{{"k{level % 7}": ')
            closing.append("}")
    return "".join(opening), "".join(reversed(closing))


def site_levels(site: str) -> int:
    """Levels of the document above a value placed at ``site`` (the top-level object is level 1)."""
    return {
        "top": 1,
        "providers": 2,
        "provider": 3,
        "headers": 4,
        "retry": 4,
        "extra_token_params": 4,
        "cache": 2,
    }[site]


@FAST
@given(
    depth=st.one_of(
        st.integers(MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH + 3), st.sampled_from([200, 5_000, 100_000])
    ),
    kinds=nest_kinds,
    site=st.sampled_from(NEST_SITES),
    as_yaml=st.booleans(),
)
def test_nesting_of_any_shape_and_depth_is_refused_cleanly(
    scratch: Path, depth: int, kinds: list[str], site: str, as_yaml: bool
) -> None:
    assume(not (as_yaml and depth > 5_000))  # PyYAML's pure-Python scanner: seconds per 100k levels
    opening, closing = nested(depth, kinds)
    marker = '"NESTED"'
    deep = opening + marker + closing
    document = valid_config(1)
    placeholder = "__PLACEHOLDER__"
    if site == "top":
        document["deep"] = placeholder
    elif site == "providers":
        document["oauth2_providers"]["deep_gw"] = placeholder
    elif site == "provider":
        document["oauth2_providers"]["gw_0"]["deep"] = placeholder
    elif site == "cache":
        document["cache"] = {"type": "memory", "deep": placeholder}
    else:
        document["oauth2_providers"]["gw_0"][site]["deep"] = placeholder
    text = json.dumps(document).replace(json.dumps(placeholder), deep)  # JSON is YAML flow style too
    path = scratch / ("deep.yaml" if as_yaml else "deep.json")
    path.write_text(text)
    outcome, elapsed = load_outcome(path)
    assert isinstance(outcome, OAuth2ConfigurationError), f"{depth} levels of nesting at {site} were accepted"
    total = site_levels(site) + depth
    if total > MAX_JSON_DEPTH:
        assert re.search(r"nested (deeper than \d+ levels|too deeply)", str(outcome)), (
            f"{total} levels at {site} were not refused as too deep: {outcome}"
        )
    assert elapsed < LOAD_SECONDS, f"{depth} levels took {elapsed:.1f} s"


# -- duplicate keys ------------------------------------------------------------------------------

DUPLICATE_SITES: list[tuple[str, ...]] = [
    (),
    ("oauth2_providers",),
    ("oauth2_providers", "gw_0"),
    ("oauth2_providers", "gw_1"),
    ("oauth2_providers", "gw_0", "headers"),
    ("oauth2_providers", "gw_1", "retry"),
    ("oauth2_providers", "gw_0", "extra_token_params"),
    ("cache",),
]


@FAST
@given(
    site=st.sampled_from(DUPLICATE_SITES),
    providers=st.integers(2, 4),
    as_yaml=st.booleans(),
    escape=st.booleans(),
    reorder=st.randoms(use_true_random=False),
)
def test_a_key_written_twice_anywhere_is_refused(
    scratch: Path, site: tuple[str, ...], providers: int, as_yaml: bool, escape: bool, reorder: Any
) -> None:
    document = valid_config(providers)
    target: Any = document
    for key in site:
        target = target[key]
    keys = list(target)
    reorder.shuffle(keys)  # which key is duplicated, and where it first appears
    shuffled = {key: target[key] for key in keys}
    target.clear()
    target.update(shuffled)
    duplicated = keys[0]
    if as_yaml:
        text, path = to_yaml(document, duplicate=site), scratch / "dup.yaml"
    else:
        text, path = to_json(document, duplicate=site, escape=escape), scratch / "dup.json"
    path.write_text(text)
    outcome, _ = load_outcome(path)
    what = "a provider" if site == ("oauth2_providers",) else "a field"
    assert isinstance(outcome, OAuth2ConfigurationError), (
        f"{what} written twice ({duplicated!r} in {'.'.join(site) or 'the top level'}) was accepted: "
        "one of the two was silently dropped"
    )
    assert_error(outcome, path, f"duplicate key '{duplicated}'")


@FAST
@given(
    pair=st.sampled_from(
        [
            ("1", '"1"'),
            ("true", '"True"'),
            ("True", '"True"'),
            ("1.5", '"1.5"'),
            ("0x1", '"1"'),
            ("null", '"None"'),
        ]
    ),
    swap=st.booleans(),
)
def test_yaml_provider_names_that_collide_once_read_are_refused(
    scratch: Path, pair: tuple[str, str], swap: bool
) -> None:
    """``1:`` and ``"1":`` are different YAML keys but the same provider name."""
    first, second = reversed(pair) if swap else pair
    body = "".join(
        f"  {key}:\n" + "".join(f"    {field}: {json.dumps(value)}\n" for field, value in settings.items())
        for key, settings in [
            (first, {"client_id": "a", "client_secret": SECRET, "token_url": "https://a.example.com/t"}),
            (second, {"client_id": "b", "client_secret": SECRET, "token_url": "https://b.example.com/t"}),
        ]
    )
    path = scratch / "collide.yaml"
    path.write_text("oauth2_providers:\n" + body)
    outcome, _ = load_outcome(path)
    assert isinstance(outcome, OAuth2ConfigurationError), (
        f"YAML keys {first} and {second} both became provider "
        f"{next(iter(outcome.oauth2_providers)) if isinstance(outcome, OAuth2Config) else '?'!r}: "
        "one provider was silently dropped"
    )
    assert "duplicate" in str(outcome) or "provider" in str(outcome), f"unclear error: {outcome}"


# -- symlinks to what cannot be read -------------------------------------------------------------

LINUX = sys.platform.startswith("linux")


def unreadable_targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Symlink targets and the message fragment each must produce."""
    loop_a, loop_b = tmp_path / "loop_a", tmp_path / "loop_b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    directory = tmp_path / "a_directory"
    directory.mkdir()
    targets = {
        "a directory": (directory, "cannot be read"),
        "a dangling link": (tmp_path / "missing.json", "not found"),
        "a symlink loop": (loop_a, "cannot be read"),
    }
    if LINUX:
        targets["/proc/self/mem (EIO, even for root)"] = (Path("/proc/self/mem"), "cannot be read")
        targets["/proc/self/clear_refs (write-only)"] = (Path("/proc/self/clear_refs"), "cannot be read")
    return targets


@pytest.mark.parametrize("hops", [1, 3])
def test_config_symlinked_to_something_unreadable(tmp_path: Path, hops: int) -> None:
    for label, (target, fragment) in unreadable_targets(tmp_path).items():
        path = target
        for hop in range(hops):
            link = tmp_path / f"{label.replace('/', '_').replace(' ', '_')}_{hop}.json"
            link.symlink_to(path)
            path = link
        outcome, elapsed = load_outcome(path)
        error = assert_error(outcome, path, fragment)
        assert elapsed < 5, f"a config symlinked to {label} took {elapsed:.1f} s"
        if fragment == "cannot be read":
            assert isinstance(error.original_error, OSError), (
                f"{label}: the OSError behind the error was lost"
            )


def test_private_key_path_symlinked_to_something_unreadable(tmp_path: Path) -> None:
    for label, (target, _fragment) in unreadable_targets(tmp_path).items():
        link = tmp_path / f"key_{label.replace('/', '_').replace(' ', '_')}.pem"
        link.symlink_to(target)
        settings = {
            "client_id": "c",
            "token_url": "https://idp.example.com/t",
            "token_endpoint_auth_method": "private_key_jwt",
            "private_key_path": str(link),
        }
        config = OAuth2Config.from_dict({"oauth2_providers": {"gw_key": settings}})
        try:
            TokenClient(config.provider("gw_key"))
        except OAuth2ConfigurationError as error:
            assert "gw_key" in str(error) and "private_key_path" in str(error), (
                f"a private_key_path symlinked to {label}: the error names neither provider nor field: {error}"
            )
        except BaseException as exc:
            pytest.fail(f"a private_key_path symlinked to {label} raised {type(exc).__name__}: {exc!r}")
        else:
            pytest.fail(f"a private_key_path symlinked to {label} was accepted")


def test_verify_ca_bundle_symlinked_to_something_unreadable_or_gone(tmp_path: Path) -> None:
    """The CA bundle is checked when the config loads and read at each request: whatever it has
    become by then (unreadable, not a PEM, deleted by a certificate rotation), the token request
    fails with ``OAuth2AuthenticationError``, not a stray ``OSError``."""
    targets: dict[str, Path | None] = {"not a PEM": None, "removed after loading": None}
    if LINUX:
        targets["/proc/self/mem"] = Path("/proc/self/mem")
    with TokenServer(key_type="EC") as server:
        for label, target in targets.items():
            link = tmp_path / f"ca_{label.replace('/', '_').replace(' ', '_')}.pem"
            if target is None:
                link.write_text("not a certificate")
            else:
                link.symlink_to(target)
            settings = {
                "client_id": "c",
                "client_secret": SECRET,
                "token_url": server.token_url.replace("http://", "https://"),
                "verify": str(link),
                "retry": {"attempts": 0},
                "timeout_seconds": 2,
            }
            config = OAuth2Config.from_dict({"oauth2_providers": {"gw_ca": settings}})
            if label == "removed after loading":
                link.unlink()
            client = TokenClient(config.provider("gw_ca"))
            try:
                client.fetch()
            except OAuth2AuthenticationError as error:
                assert "gw_ca" in str(error), (
                    f"CA bundle {label}: the error does not name the provider: {error}"
                )
            except BaseException as exc:
                pytest.fail(f"CA bundle {label}: the token request raised {type(exc).__name__}: {exc!r}")
            else:
                pytest.fail(f"CA bundle {label}: a token was fetched over https without a usable CA bundle")
            finally:
                client.close()


@contextmanager
def unprivileged() -> Iterator[None]:
    """chmod 000 does not stop root: as root, check file access as 'nobody' for a moment."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="needs POSIX file permissions")
def test_config_symlinked_to_a_file_its_user_may_not_read() -> None:
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        base.chmod(0o755)
        target = base / "secret.json"
        target.write_text(json.dumps(valid_config(1)))
        target.chmod(0)
        link = base / "litellm_config.json"
        link.symlink_to(target)
        with unprivileged():
            outcome, elapsed = load_outcome(link)
        error = assert_error(outcome, link, "cannot be read")
        assert isinstance(error.original_error, PermissionError), f"not a permission error: {error!r}"
        assert elapsed < 5
