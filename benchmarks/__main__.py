"""``python -m benchmarks [--quick]``.

Kept import-free at module level: worker processes started with the 'spawn' method import this
module as ``__mp_main__``, and they must not pay for (or be changed by) importing LiteLLM.
"""

import sys

if __name__ == "__main__":
    from benchmarks.cli import main

    sys.exit(main())
