"""Every module says what is public, and the package exports what users implement or catch."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import litellm_oauth2

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(litellm_oauth2.__path__, prefix="litellm_oauth2.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_lists_its_public_names_and_each_exists(name: str) -> None:
    module = importlib.import_module(name)
    public = getattr(module, "__all__", None)
    assert public is not None, f"{name} has no __all__"
    missing = [item for item in public if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_the_package_exports_the_protocol_a_store_implements_and_every_error_class() -> None:
    for name in (
        "TokenStore",
        "OAuth2ProviderError",
        "OAuth2ClientRejectedError",
        "OAuth2TokenUnavailableError",
    ):
        assert name in litellm_oauth2.__all__
        assert getattr(litellm_oauth2, name) is not None


def test_the_environment_variable_names_are_defined_once() -> None:
    from litellm_oauth2 import _environment, autoload, config

    assert config.CONFIG_ENV_VAR is _environment.CONFIG_ENV_VAR
    assert autoload.CONFIG_ENV_VAR is _environment.CONFIG_ENV_VAR


def test_importing_the_package_and_its_core_loads_no_litellm() -> None:
    code = (
        "import sys, litellm_oauth2, litellm_oauth2.config, litellm_oauth2.client, "
        "litellm_oauth2.cache, litellm_oauth2.errors, litellm_oauth2.cli, litellm_oauth2.metrics, "
        "litellm_oauth2.exporters; "
        "print('litellm' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
