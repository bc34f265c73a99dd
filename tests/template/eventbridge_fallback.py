"""EventBridge event-pattern matching in plain Python: the routing test's fallback matcher.

The routing test runs the template's rules through event-ruler (Quamina, the real EventBridge
matcher) where PyPI has a wheel for it: event-ruler 0.3.0 ships only for CPython 3.10 and 3.11, on
manylinux x86_64 and macOS arm64. On any other Python this module stands in for it.

It implements exactly the part of EventBridge's pattern language the template's rules use, and
refuses everything else (UnsupportedPattern) instead of guessing:

- A pattern is a JSON object. Every field it names must match (AND); fields of the event that the
  pattern does not name are ignored. A missing field does not match.
- A nested object descends into the event's object of the same name.
- A leaf is a non-empty list of strings: the event's value there must be one of them, exactly
  (case-sensitive, no trimming). A number, boolean, null or object at that place never equals a
  string: `1` does not match "1".
- The array rule: where the event holds an array, the pattern matches when any element matches,
  at any depth (arrays of arrays are walked too). Everything a pattern object asks about inside
  one array element must hold in that same element ("array consistency"): the pattern
  {"Contents": {"A": ["x"], "B": ["y"]}} does not match "Contents": [{"A": "x"}, {"B": "y"}].
  That is Quamina's behaviour (the routing test proves it), and EventBridge's.
- No `$or` (cfn_model.expand_or turns a rule into `$or`-free patterns first) and no content
  filters ({"prefix": ...}, {"anything-but": ...}, {"exists": ...}, numeric, wildcard, ...): the
  template uses none of them today. Adding one to a rule makes the fallback raise, so the routing
  test fails loudly rather than passing on semantics nobody checked.

test_routing.py keeps this honest in two ways: a table of cases whose answers were recorded from
event-ruler (checked against the fallback everywhere, and against event-ruler wherever it is
installed), and, where event-ruler is installed, a comparison of both matchers on the template's
own rules over every combination of the tags and event kinds those rules mention.
"""

from __future__ import annotations

from typing import Any


class UnsupportedPattern(ValueError):
    """The pattern uses EventBridge syntax this fallback does not implement."""


def matches(event: dict[str, Any], pattern: dict[str, Any]) -> bool:
    """Whether the EventBridge `event` matches the `$or`-free, string-only `pattern`."""
    _check_pattern(pattern, ())
    if not isinstance(event, dict):
        raise TypeError("an event is a JSON object")
    return _match_object(event, pattern)


def _check_pattern(pattern: Any, path: tuple[str, ...]) -> None:
    where = ".".join(path) or "<pattern>"
    if not isinstance(pattern, dict) or not pattern:
        raise ValueError(f"{where}: a pattern (or nested pattern) is a non-empty JSON object")
    for key, value in pattern.items():
        here = ".".join(path + (key,))
        if key.startswith("$"):
            raise UnsupportedPattern(f"{here}: {key} (expand `$or` with cfn_model.expand_or first)")
        if isinstance(value, dict):
            _check_pattern(value, path + (key,))
        elif isinstance(value, list):
            if not value:
                raise ValueError(f"{here}: an empty list of values matches nothing")
            for item in value:
                if isinstance(item, dict):
                    raise UnsupportedPattern(f"{here}: content filter {item!r} is not implemented")
                if not isinstance(item, str):
                    raise UnsupportedPattern(f"{here}: only string values are implemented, not {item!r}")
        else:
            raise ValueError(f"{here}: a leaf is a list of values, not {value!r}")


def _elements(value: Any):
    """The value itself, or, for an array, every non-array element it holds at any depth."""
    if isinstance(value, list):
        for item in value:
            yield from _elements(item)
    else:
        yield value


def _match_object(event: Any, pattern: dict[str, Any]) -> bool:
    if not isinstance(event, dict):
        return False
    for key, sub in pattern.items():
        if key not in event:
            return False
        if isinstance(sub, dict):
            # One array element must satisfy the whole nested pattern (array consistency).
            ok = any(_match_object(element, sub) for element in _elements(event[key]))
        else:
            ok = any(isinstance(element, str) and element in sub for element in _elements(event[key]))
        if not ok:
            return False
    return True
