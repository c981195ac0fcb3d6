"""``python -m litellm_oauth2`` is the ``litellm-oauth2`` command."""

import sys

from .cli import main

sys.exit(main())
