"""The Markdown tables written to stdout (and pasted into docs/benchmarks.md), and the leak check."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from . import peers


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| " + " | ".join(_n(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
        for row in rows
    ]
    return [*lines, ""]


def _failed(section: dict[str, Any]) -> str | None:
    if "error" in section:
        return f"**failed**: {section['error']}"
    if "skipped" in section:
        return f"skipped: {section['skipped']}"
    return None


def _warm(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['calls_per_contender']:,} sync and {r['asyncio_calls_per_contender']:,} asyncio calls per "
        f"contender, timed in batches of {r['batch_size']:,}; a sample is one batch's mean, n = batches.",
        "",
    ]
    rows = []
    for name, s in r["sync"].items():
        a = r["async"].get(name, {})
        rows.append(
            [
                name,
                s["median"],
                s["p99"],
                s["n"],
                a.get("median"),
                a.get("p99"),
                a.get("n"),
                _n(r["ratio_ours_over_peer_sync"].get(name), 3),
                _n(r["ratio_ours_over_peer_async"].get(name), 3),
            ]
        )
    lines += _table(
        [
            "contender",
            "sync median ns",
            "sync p99 ns",
            "n",
            "asyncio median ns",
            "asyncio p99 ns",
            "n",
            "ours/contender sync",
            "ours/contender asyncio",
        ],
        rows,
    )
    lines.append(
        f"Ours over the floor (goal: 2x): the header value `Bearer <token>`, as the floor builds no dict "
        f"either, {_n(r['ratio_header_value_over_floor'], 2)}x ({_n(r['ratio_header_value_over_floor_net_of_loop'], 2)}x "
        f"net of the empty loop); with the headers dict built, as the peers return it, "
        f"{_n(r['ratio_ours_over_peer_sync'].get('floor: dict lookup + monotonic()'), 2)}x."
    )
    lines.append("")
    return lines


def _stampede(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['threads']} threads + {r['asyncio_tasks']} asyncio tasks on a cold cache; IdP latency "
        f"{_n(r['idp_latency_ms'], 0)} ms; up to {r['rounds']} rounds (a contender whose round takes over "
        "5 s runs once).",
        "",
    ]
    rows = []
    for name, c in r["contenders"].items():
        rows.append(
            [
                name,
                c["token_requests_median"],
                ", ".join(str(n) for n in c["token_requests_per_round"]),
                c["all_hold_token_ms"]["median"]
                if not c["rounds_cut_short"]
                else f"> {r['deadline_s'] * 1000:,.0f} (cut short)",
                c["caller_wait_ms"]["median"],
                c["caller_wait_ms"]["p99"],
                c["caller_wait_ms"]["n"],
                ", ".join(f"{k}: {v}" for k, v in c["errors"].items()) or "none",
                c["rounds_cut_short"],
            ]
        )
    return lines + _table(
        [
            "contender",
            "token requests (median)",
            "per round",
            "all hold a token, ms (median)",
            "caller wait median ms",
            "caller wait p99 ms",
            "n callers",
            "errors",
            "rounds cut short",
        ],
        rows,
    )


def _ratio_range(k: dict[str, Any]) -> str:
    per_round = [x for x in k["ratio_ours_over_static_per_round"] if x is not None]
    if not per_round:
        return "-"
    return f"{k['ratio_ours_over_static']:.3f} ({min(per_round):.2f}-{max(per_round):.2f})"


def _e2e(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['rounds']} rounds; per round and path {r['completion_calls_per_round']} sequential "
        f"`litellm.completion` and {r['acompletion_calls_per_round']} `litellm.acompletion` "
        f"({r['acompletion_concurrency']} in flight). Gateway requests: {r['gateway_requests']:,}, "
        f"unauthorized: {r['gateway_unauthorized']}.",
        "",
    ]
    rows = []
    for kind, label in (("sync", "completion"), ("async", f"acompletion x{r['acompletion_concurrency']}")):
        k = r[kind]
        for name in (peers.OURS, peers.STATIC):
            t, lat = k["throughput_calls_per_s"][name], k["latency_ms"][name]
            cpu = k["client_cpu_ms_per_call"][name]
            rows.append(
                [
                    label,
                    name,
                    t["median"],
                    t["p99"],
                    t["n"],
                    lat["median"],
                    lat["p99"],
                    lat["n"],
                    _n(cpu["median"], 2),
                    _ratio_range(k) if name == peers.OURS else "",
                    _n(k["cpu_ratio_ours_over_static"], 3) if name == peers.OURS else "",
                ]
            )
    return lines + _table(
        [
            "call",
            "path",
            "calls/s median",
            "calls/s p99",
            "n rounds",
            "latency median ms",
            "latency p99 ms",
            "n calls",
            "client CPU ms per call (median)",
            "throughput ours/static: median of per-round ratios (range)",
            "calls per CPU-second ours/static",
        ],
        rows,
    )


def _refresh(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['workers']} workers; lifetimes of {_n(r['lifetime_s'], 0)} s (usable "
        f"{_n(r['lifetime_s'] - r['margin_s'], 1)} s after a {_n(r['margin_s'], 1)} s margin), IdP latency "
        f"{_n(r['idp_latency_ms'], 0)} ms, {_n(r['think_time_ms'], 0)} ms pause between a worker's calls. "
        "A call = obtain headers + GET on the gateway. The first two rows alternate over "
        f"{r['rounds']} rounds of {r['lifetimes_per_round']} lifetimes (pooled; the per-round ratios show the "
        f"spread); each peer runs {r['peer_lifetimes']} lifetimes once.",
        "",
    ]
    rows = []
    for name, c in r["contenders"].items():
        i, o = c["latency_inside_ms"], c["latency_outside_ms"]
        rows.append(
            [
                name,
                i["median"],
                i["p99"],
                i["n"],
                o["median"],
                o["p99"],
                o["n"],
                _n(c["p99_inside_over_outside"], 2),
                ", ".join(_n(x, 2) for x in c["p99_inside_over_outside_per_round"]),
                _n(c["p99_placebo_over_outside"], 2),
                c["token_requests_per_lifetime"],
                c["token_requests_per_renewal"],
                c["largest_renewal"],
                c["calls_not_ok"],
                "-" if c["callers_that_waited_on_the_idp"] is None else c["callers_that_waited_on_the_idp"],
            ]
        )
    lines += _table(
        [
            "contender",
            "inside p50 ms",
            "inside p99 ms",
            "n",
            "outside p50 ms",
            "outside p99 ms",
            "n",
            "p99 inside/outside",
            "per round",
            "p99 placebo/outside",
            "token requests per lifetime",
            "per renewal",
            "largest renewal",
            "failed calls",
            "callers that waited on the IdP",
        ],
        rows,
    )
    lines.append(
        "The first row is the machine's share: static-key callers while another process renews at the same "
        "cadence. Ours, p99 inside/outside over that row's: "
        f"{_n(r['ours_p99_ratio_over_baseline_p99_ratio'], 2)}."
    )
    lines.append("")
    return lines


def _startup(r: dict[str, Any]) -> list[str]:
    p, i = r["python_c_pass_ms"], r["import_litellm_s"]
    rows = [
        [
            "`python -c pass`, ms",
            "installed, env unset",
            p["installed_env_unset"]["median"],
            p["installed_env_unset"]["p99"],
            p["installed_env_unset"]["n"],
        ],
        [
            "`python -c pass`, ms",
            "not installed",
            p["not_installed"]["median"],
            p["not_installed"]["p99"],
            p["not_installed"]["n"],
        ],
        [
            "`import litellm` (wall), s",
            "env unset",
            i["env_unset_wall"]["median"],
            i["env_unset_wall"]["p99"],
            i["env_unset_wall"]["n"],
        ],
        [
            "`import litellm` (wall), s",
            "env set",
            i["env_set_wall"]["median"],
            i["env_set_wall"]["p99"],
            i["env_set_wall"]["n"],
        ],
        [
            "plugin activation inside `import litellm`, s",
            "env set",
            i["activation_in_process"]["median"],
            i["activation_in_process"]["p99"],
            i["activation_in_process"]["n"],
        ],
    ]
    lines = _table(["measurement", "variant", "median", "p99", "n"], rows)
    lines.append(
        f"`python -c pass`: installed minus not installed = {_n(p['difference_of_medians_ms'], 2)} ms "
        f"(run-to-run noise, median of successive differences: {_n(p['run_to_run_noise_ms'], 2)} ms). "
        f"`import litellm` with the env var set: {_n(i['added_by_activation_pct'], 2)} % added by the "
        "activation timed in-process"
        + (
            f"; {_n(i['added_by_env_wall_pct'], 1)} % by the difference of wall-clock medians (noisy)."
            if i["added_by_env_wall_pct"] is not None
            else " (--quick: no run without the variable)."
        )
    )
    return [*lines, ""]


def _processes(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['processes']} processes sharing one client id, {r['lifetimes']} lifetimes of "
        f"{_n(r['lifetime_s'], 0)} s, calls every 10 ms in each process.",
        "",
    ]
    rows = [
        [
            name,
            v["token_requests_per_lifetime"],
            v["token_requests_measured"],
            v["cold_start_token_requests"],
            v["calls"],
            v["failed_calls"],
        ]
        for name, v in r["variants"].items()
    ]
    return lines + _table(
        [
            "cache",
            "token requests per lifetime",
            "token requests (measured)",
            "cold start requests",
            "calls",
            "failed calls",
        ],
        rows,
    )


def _proxy(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['concurrency']} requests in flight (chat and SSE streaming alternating), {r['rounds']} round(s) of "
        f"{r['requests_per_round_per_model']:,} requests per model; tokens of {_n(r['lifetime_s'], 0)} s.",
        "",
    ]
    rows = []
    for name, v in r["variants"].items():
        if "skipped" in v:
            rows.append([name, f"skipped: {v['skipped']}", "", "", "", "", "", "", "", ""])
            continue
        ours, static = v["contenders"]["litellm-oauth2"], v["contenders"]["static key"]
        per_round = v["throughput_ours_over_static_per_round"]
        rows.append(
            [
                name,
                f"{_n(ours['requests_per_s'])} / {_n(static['requests_per_s'])}",
                f"{_n(v['throughput_ratio_median_of_rounds'], 3)} ({_n(min(per_round), 3)}-{_n(max(per_round), 3)})",
                f"{_n(ours['latency_ms']['median'])} / {_n(static['latency_ms']['median'])}",
                f"{_n(ours['latency_ms']['p99'])} / {_n(static['latency_ms']['p99'])}",
                _n(v["p99_ours_over_static"], 3),
                f"{_n(ours['proxy_cpu_ms_per_request'], 2)} / {_n(static['proxy_cpu_ms_per_request'], 2)}",
                _n(v["requests_per_proxy_cpu_second_ours_over_static"], 3),
                f"{v['token_requests']} in {v['renewals']} renewals ({_n(v['token_lifetimes'], 1)} lifetimes)",
                ours["failed"] + static["failed"] + v["unauthorized_at_gateway"],
            ]
        )
    return lines + _table(
        [
            "proxy",
            "req/s ours / static",
            "throughput ratio, median of rounds (range)",
            "p50 ms ours / static",
            "p99 ms ours / static",
            "p99 ratio",
            "proxy CPU ms per request ours / static",
            "requests per proxy CPU-second ours/static",
            "token requests",
            "failed + unauthorized",
        ],
        rows,
    )


def _memory(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['calls']:,} calls with {_n(r['lifetime_s'], 0)} s tokens (sync, asyncio, streaming mixed), then "
        f"{r['loops']} successive `asyncio.run` loops making one call each; start / end of the run.",
        "",
    ]
    rows = [
        [
            name,
            f"{_n(v['start']['rss_mib'])} / {_n(v['end']['rss_mib'])}",
            f"{v['start']['threads']} / {v['end']['threads']}",
            f"{v['start']['open_fds']} / {v['end']['open_fds']}",
            f"{v['start']['async_clients']} / {v['end']['async_clients']} ({v['end']['async_clients_before_gc']} before gc)",
            v["token_requests"],
            v["failed"],
        ]
        for name, v in r["contenders"].items()
    ]
    return lines + _table(
        [
            "contender",
            "RSS MiB",
            "threads",
            "open fds",
            "live httpx.AsyncClient",
            "token requests",
            "failed calls",
        ],
        rows,
    )


SECTIONS = [
    ("warm_path", "1. Warm path: ns to obtain the headers of a call, token cached", _warm),
    ("stampede", "2. Stampede: cold cache, threads + asyncio tasks at once", _stampede),
    ("end_to_end", "3. End to end: LiteLLM calls through the plugin vs a static key", _e2e),
    ("refresh_under_load", "4. Refresh under load: call latency inside vs outside refresh windows", _refresh),
    ("startup", "5. Start-up cost", _startup),
    ("many_processes", "6. Many processes: shared Redis cache vs in-memory", _processes),
    ("proxy_under_load", "7. The LiteLLM proxy under load: OAuth2 provider vs static key", _proxy),
    ("memory_and_handles", "8. Memory and handles over time", _memory),
]


def goals(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, title, _ in SECTIONS:
        section = results["benchmarks"].get(key, {})
        for goal, met in (section.get("goals") or {}).items():
            rows.append([title.split(":")[0], goal.replace("_", " "), "met" if met else "**not met**"])
    return rows


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"## Results ({'quick' if results['quick'] else 'full'} run, {results['date']})",
        "",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, {m['platform']}; load "
        f"average {m['load_average_start']} at start, {m['load_average_end']} at end (other processes were running).",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        f"- Command: `{results['command']}`; wall time {results['wall_time_s']:.0f} s.",
        "",
    ]
    for key, title, render in SECTIONS:
        section = results["benchmarks"].get(key)
        if section is None:
            continue
        lines += [f"### {title}", ""]
        failed = _failed(section)
        lines += [failed, ""] if failed else render(section)
    lines += ["### Goals", ""]
    lines += _table(["benchmark", "goal", "result"], goals(results))
    return "\n".join(lines)


def assert_no_secrets(texts: dict[str, str], secrets: dict[str, str]) -> None:
    """Fail the run, printing only labels, if any secret or issued token appears in what it writes."""
    leaked = sorted(
        f"{label} in {where}"
        for label, secret in secrets.items()
        if secret
        for where, text in texts.items()
        if secret in text
    )
    if leaked:
        raise AssertionError(f"secrets found in the benchmark's output: {leaked}")


def dumps(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, sort_keys=False) + "\n"
