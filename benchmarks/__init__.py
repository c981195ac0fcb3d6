"""The benchmark suite: litellm-oauth2 against its peers, in one run, interleaved.

Run it with ``python -m benchmarks`` (about 4 minutes) or ``python -m benchmarks --quick``
(a smoke test, under a minute). The Markdown table goes to stdout and the full results to
``benchmarks/results/latest.json``; ``docs/benchmarks.md`` explains every measurement.
"""
