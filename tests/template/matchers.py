"""The EventBridge pattern matchers the routing test can run, and which of them this Python has.

- "event-ruler": PyPI `event-ruler` (Quamina, the real matcher; see test_routing.py). Its wheels
  exist only for CPython 3.10 and 3.11 (manylinux x86_64, macOS arm64), so scripts/test-all.sh
  installs it only there.
- "python": eventbridge_fallback, the same semantics in plain Python for the patterns the template
  uses. Always available; where event-ruler is too, both run and are compared.

A missing event-ruler is never silent: `describe()` is printed in pytest's header and summary.
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any, Callable

import eventbridge_fallback

try:
    import event_ruler
except ModuleNotFoundError as err:  # only its absence; a broken install must fail loudly
    if err.name != "event_ruler":
        raise
    event_ruler = None

Matcher = Callable[[dict[str, Any], dict[str, Any]], bool]


def _event_ruler_matches(event: dict[str, Any], pattern: dict[str, Any]) -> bool:
    # Quamina aborts the whole process (a Go panic) on an empty list of values; refuse it here.
    if _has_empty_list(pattern):
        raise ValueError(f"an empty list of values in {pattern!r} matches nothing")
    return bool(event_ruler.test_event_pattern(json.dumps(event), json.dumps(pattern)))


def _has_empty_list(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_empty_list(v) for v in node.values())
    return node == []


MATCHERS: dict[str, Matcher] = {}
if event_ruler is not None:
    MATCHERS["event-ruler"] = _event_ruler_matches
MATCHERS["python"] = eventbridge_fallback.matches

PYTHON = f"{platform.python_implementation()} {platform.python_version()} ({sys.platform} {platform.machine()})"


def describe() -> str:
    if event_ruler is not None:
        return (
            f"routing matchers: event-ruler (Quamina, the real EventBridge matcher) AND the Python "
            f"fallback, compared with each other, on {PYTHON}"
        )
    return (
        f"routing matcher: Python fallback ONLY (tests/template/eventbridge_fallback.py); event-ruler "
        f"is not installed: PyPI has no event-ruler==0.3.0 wheel for {PYTHON}. The fallback is "
        f"checked against answers recorded from event-ruler."
    )
