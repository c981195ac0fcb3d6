"""The environment variables that switch the plugin on and off, named once.

A module of its own because ``autoload`` runs at every interpreter start and must stay as cheap
as these three lines; ``config`` and ``autoload`` both read the names from here.
"""

from __future__ import annotations

__all__ = ["CONFIG_ENV_VAR", "DEFAULT_CONFIG_PATH", "DISABLE_ENV_VAR"]

CONFIG_ENV_VAR = "LITELLM_OAUTH2_CONFIG"
DISABLE_ENV_VAR = "LITELLM_OAUTH2_DISABLE"
DEFAULT_CONFIG_PATH = "litellm_config.json"
