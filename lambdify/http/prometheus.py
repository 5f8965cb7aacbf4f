"""`/_lambdify/metrics`: `lambdify.stats()` in Prometheus' text exposition format (version 0.0.4).

Counters (`lambdify_<name>_total`) and gauges labelled by `function`, and the latency histogram
`lambdify_invocation_duration_seconds`. Written directly: the format is small.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
COUNTERS: Final = {
    "invocations": "Invocations that ended (cold and warm starts)",
    "cold_starts": "Invocations that ran INIT first",
    "warm_starts": "Invocations on a warm context",
    "errors": "Invocations that ended with an unhandled error",
    "timeouts": "Invocations that passed their timeout",
    "oom": "Invocations that passed the memory ceiling",
    "throttles": "Invocations refused (TooManyRequests)",
    "init_errors": "INIT phases that failed",
    "contexts_retired": "Execution contexts retired",
    "deferred_errors": "Deferred work items that failed",
    "abandoned_threads": "Threads abandoned after a timeout",
}
GAUGES: Final = {
    "contexts_alive": ("lambdify_contexts", "Execution contexts alive"),
    "init_ms_last": ("lambdify_last_init_duration_seconds", "Duration of the last INIT phase"),
}
HISTOGRAM: Final = "lambdify_invocation_duration_seconds"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(report: dict[str, dict[str, Any]]) -> str:
    """The text for a `lambdify.stats()` report (merged across workers, or one process's)."""
    lines: list[str] = []
    functions = [(f'function="{_label(name)}"', entry) for name, entry in report.items()]
    for key, help_text in COUNTERS.items():
        metric = f"lambdify_{key}_total"
        lines += [f"# HELP {metric} {help_text}.", f"# TYPE {metric} counter"]
        lines += [f"{metric}{{{label}}} {entry.get(key, 0)}" for label, entry in functions]
    for key, (metric, help_text) in GAUGES.items():
        lines += [f"# HELP {metric} {help_text}.", f"# TYPE {metric} gauge"]
        for label, entry in functions:
            value = entry.get(key)
            if value is not None:
                lines.append(f"{metric}{{{label}}} {_number(value / 1000 if key == 'init_ms_last' else value)}")
    lines += [f"# HELP {HISTOGRAM} Duration of invocations (REPORT's Duration).", f"# TYPE {HISTOGRAM} histogram"]
    for label, entry in functions:
        latency = entry["latency"]
        total = 0
        for bound, count in zip([*latency["bounds_ms"], None], latency["counts"], strict=True):
            total += count
            le = "+Inf" if bound is None else _number(bound / 1000)
            lines.append(f'{HISTOGRAM}_bucket{{{label},le="{le}"}} {total}')
        lines.append(f"{HISTOGRAM}_sum{{{label}}} {_number(latency['sum_ms'] / 1000)}")
        lines.append(f"{HISTOGRAM}_count{{{label}}} {total}")
    return "\n".join(lines) + "\n"
