"""ARTC callbacks reach exactly the right functions: the template's own EventBridge rules, run
through a real EventBridge pattern matcher against sample callbacks shaped as in
alibaba-api.md §4.3, wrapped the way the HTTP API's EventBridge-PutEvents integration wraps them.

The matcher is Quamina (PyPI `event-ruler`, a compiled build of quamina.net/go/quamina, written by
the author of AWS's event-ruler to EventBridge's semantics), because the point is the array rule:
a pattern field under `detail.Contents` matches when *any* element of `Contents[]` matches.
moto 5.2.5 can't be used for this: its TestEventPattern is a stub that returns no result, and
its put_events matcher does not descend into arrays of objects, so it would miss every callback.
Quamina has no `$or`; as its documentation prescribes, OR is several patterns for one target,
which is what `cfn_model.expand_or` produces (and is tested for below).

event-ruler 0.3.0 has wheels only for CPython 3.10 and 3.11. Every routing test runs with each
matcher this Python has (matchers.py): event-ruler where it installs, and always the Python
fallback (eventbridge_fallback.py), which implements the part of EventBridge's semantics the
template's rules use. The fallback is checked against answers recorded from event-ruler, and, where
event-ruler is installed, against event-ruler itself on the template's own rules. pytest's summary
line says which matchers ran.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import eventbridge_fallback
from cfn_model import expand_or, getatt_target, load_template, resources_of_type, walk
from matchers import MATCHERS, Matcher, event_ruler

SAMPLES = Path(__file__).parent / "samples"

PUBLISHED = "stream-published"
UNPUBLISHED = "stream-unpublished"

# sample callback body -> the functions it must reach (and no others)
EXPECTED = {
    "publish.json": {PUBLISHED},
    "publish_2021_casing.json": {PUBLISHED},
    "join.json": {PUBLISHED},
    "unpublish.json": {UNPUBLISHED},
    "leave.json": {UNPUBLISHED},
    "channel_close.json": {UNPUBLISHED},
    "leave_and_close.json": {UNPUBLISHED},
    "publish_and_leave.json": {PUBLISHED, UNPUBLISHED},
    # The role change is judged by the functions: on stage (Role 1) or off it (Role 2).
    "roleupdate.json": {PUBLISHED, UNPUBLISHED},
    "channel_open.json": set(),
    # Camera state: hides camera-less co-hosts in rooms that ask for it (issue 12, item 5).
    "camera_open_2021.json": {PUBLISHED},
    "camera_close_2021.json": {UNPUBLISHED},
}


def matches(event: dict, pattern: dict, match: Matcher) -> bool:
    """A rule's pattern (maybe with `$or`) matches when any of its `$or`-free expansions does."""
    return any(match(event, branch) for branch in expand_or(pattern))


@pytest.fixture(scope="module", params=sorted(MATCHERS))
def match(request) -> Matcher:
    """Each EventBridge matcher this Python has (matchers.py); the test id names it."""
    return MATCHERS[request.param]


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def envelope(template):
    """Wraps a callback body as the ARTC route's integration puts it on the bus."""
    params = template["Resources"]["ArtcCallbackIntegration"]["Properties"]["RequestParameters"]
    assert params["Detail"] == "$request.body", "the callback body must be the event detail"

    def wrap(body: dict, source: str | None = None) -> dict:
        return {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": params["DetailType"],
            "source": source or params["Source"],
            "account": "123456789012",
            "time": "2024-01-02T03:05:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": body,
        }

    return wrap


@pytest.fixture(scope="module")
def rules(template) -> dict[str, dict]:
    """Binary name of the target function -> the rule's EventPattern, for the bus's rules."""
    resources = template["Resources"]
    out: dict[str, dict] = {}
    for name, rule in resources_of_type(template, "AWS::Events::Rule").items():
        props = rule["Properties"]
        if getatt_target(props.get("EventBusName")) != "ArtcEventBus":
            continue
        for target in props["Targets"]:
            fn = resources[getatt_target(target["Arn"])]
            binary = fn["Metadata"]["BuildProperties"]["Binary"]
            assert binary not in out, f"{binary} is the target of two rules ({name})"
            out[binary] = props["EventPattern"]
    assert set(out) == {PUBLISHED, UNPUBLISHED}
    return out


def routed(rules: dict[str, dict], event: dict, match: Matcher) -> set[str]:
    return {binary for binary, pattern in rules.items() if matches(event, pattern, match)}


def test_every_sample_has_an_expectation():
    assert {p.name for p in SAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_callback_reaches_exactly_the_right_functions(sample, rules, envelope, match):
    body = json.loads((SAMPLES / sample).read_text())
    assert routed(rules, envelope(body), match) == EXPECTED[sample]


def test_events_from_another_source_reach_nothing(rules, envelope, match):
    body = json.loads((SAMPLES / "publish_and_leave.json").read_text())
    assert routed(rules, envelope(body, source="someone.else"), match) == set()


def test_every_user_tag_is_routed_somewhere(rules, envelope, match):
    """The five documented UserEvent tags each reach at least one function."""
    for tag in ["Join", "Leave", "Publish", "Unpublish", "Roleupdate"]:
        body = json.loads((SAMPLES / "publish.json").read_text())
        body["Contents"][0]["UserEvent"]["EventTag"] = tag
        assert routed(rules, envelope(body), match), f"{tag} reaches no function"


# --- the tools the test relies on ------------------------------------------------------------------


def test_matcher_applies_the_array_rule(match):
    event = {"detail": {"Contents": [{"UserEvent": {"EventTag": "Leave"}}, {"UserEvent": {"EventTag": "Publish"}}]}}
    assert matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Publish"]}}}}, match)
    assert matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Leave"]}}}}, match)
    assert not matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Join"]}}}}, match)
    assert not matches(event, {"detail": {"Contents": {"ChannelEvent": {"EventTag": ["Close"]}}}}, match)


def test_matcher_is_case_sensitive_like_eventbridge(match):
    event = {"detail": {"Contents": [{"UserEvent": {"EventTag": "publish"}}]}}
    assert not matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Publish"]}}}}, match)


# (name, event, pattern, what event-ruler 0.3.0 answered). The fallback must give the recorded
# answer on every Python; event-ruler, where installed, must still give it.
RECORDED = [
    ("exact", {"a": "x"}, {"a": ["x"]}, True),
    ("one of several", {"a": "y"}, {"a": ["x", "y"]}, True),
    ("other value", {"a": "z"}, {"a": ["x", "y"]}, False),
    ("case-sensitive", {"a": "X"}, {"a": ["x"]}, False),
    ("no trimming", {"a": "x "}, {"a": ["x"]}, False),
    ("empty string", {"a": ""}, {"a": [""]}, True),
    ("unicode", {"a": "é"}, {"a": ["é"]}, True),
    ("quote in value", {"a": 'x"y'}, {"a": ['x"y']}, True),
    ("missing field", {"b": "x"}, {"a": ["x"]}, False),
    ("extra event fields ignored", {"a": "x", "b": "y"}, {"a": ["x"]}, True),
    ("every field must match", {"a": "x", "b": "z"}, {"a": ["x"], "b": ["y"]}, False),
    ("number is not a string", {"a": 1}, {"a": ["1"]}, False),
    ("boolean is not a string", {"a": True}, {"a": ["true"]}, False),
    ("null is not a string", {"a": None}, {"a": ["null"]}, False),
    ("object at a leaf", {"a": {"b": "x"}}, {"a": ["x"]}, False),
    ("string where an object is asked", {"a": "x"}, {"a": {"b": ["x"]}}, False),
    ("nested", {"a": {"b": {"c": "x"}}}, {"a": {"b": {"c": ["x"]}}}, True),
    ("array of strings", {"a": ["w", "x"]}, {"a": ["x"]}, True),
    ("array of strings, no hit", {"a": ["w", "v"]}, {"a": ["x"]}, False),
    ("empty array", {"a": []}, {"a": ["x"]}, False),
    ("array of arrays", {"a": [["w"], ["x"]]}, {"a": ["x"]}, True),
    ("array of objects", {"a": [{"b": "w"}, {"b": "x"}]}, {"a": {"b": ["x"]}}, True),
    ("array of arrays of objects", {"a": [[{"b": "x"}]]}, {"a": {"b": ["x"]}}, True),
    ("array in array element", {"a": [{"b": [{"c": "w"}]}, {"b": [{"c": "x"}]}]}, {"a": {"b": {"c": ["x"]}}}, True),
    ("both fields in one element", {"a": [{"b": "x", "c": "y"}]}, {"a": {"b": ["x"], "c": ["y"]}}, True),
    ("fields split over elements", {"a": [{"b": "x"}, {"c": "y"}]}, {"a": {"b": ["x"], "c": ["y"]}}, False),
    ("one element has both", {"a": [{"b": "x"}, {"b": "x", "c": "y"}]}, {"a": {"b": ["x"], "c": ["y"]}}, True),
    ("array field outside array", {"a": [{"b": "x"}], "c": "y"}, {"a": {"b": ["x"]}, "c": ["y"]}, True),
    ("split over inner elements", {"a": [{"b": [{"c": "x"}, {"d": "y"}]}]}, {"a": {"b": {"c": ["x"], "d": ["y"]}}}, False),
    ("split over outer elements", {"a": [{"b": "x"}, {"c": [{"d": "y"}]}]}, {"a": {"b": ["x"], "c": {"d": ["y"]}}}, False),
    ("same outer element", {"a": [{"b": "x", "c": [{"d": "y"}]}]}, {"a": {"b": ["x"], "c": {"d": ["y"]}}}, True),
    (
        "callback with two contents",
        {"source": "s", "detail": {"Contents": [{"UserEvent": {"EventTag": "Leave"}}, {"ChannelEvent": {"EventTag": "Close"}}]}},
        {"source": ["s"], "detail": {"Contents": {"ChannelEvent": {"EventTag": ["Close"]}}}},
        True,
    ),
    (
        "tag of another kind",
        {"source": "s", "detail": {"Contents": [{"UserEvent": {"EventTag": "Close"}}]}},
        {"source": ["s"], "detail": {"Contents": {"ChannelEvent": {"EventTag": ["Close"]}}}},
        False,
    ),
]


@pytest.mark.parametrize("name, event, pattern, answer", RECORDED, ids=[c[0] for c in RECORDED])
def test_matcher_gives_event_rulers_recorded_answers(name, event, pattern, answer, match):
    assert match(event, pattern) is answer


@pytest.mark.parametrize(
    "pattern",
    [
        {"a": [{"prefix": "x"}]},
        {"a": [{"anything-but": ["x"]}]},
        {"a": [{"exists": True}]},
        {"a": [1]},
        {"a": [None]},
        {"$or": [{"a": ["x"]}, {"b": ["y"]}]},
    ],
)
def test_fallback_refuses_what_it_does_not_implement(pattern):
    with pytest.raises(eventbridge_fallback.UnsupportedPattern):
        eventbridge_fallback.matches({"a": "x"}, pattern)


@pytest.mark.parametrize("pattern", [{}, {"a": []}, {"a": "x"}, {"a": {}}])
def test_fallback_rejects_invalid_patterns(pattern):
    with pytest.raises(ValueError):
        eventbridge_fallback.matches({"a": "x"}, pattern)


def test_fallback_supports_every_pattern_of_the_template(rules):
    for pattern in rules.values():
        for branch in expand_or(pattern):
            eventbridge_fallback.matches({}, branch)  # raises on anything it does not implement


@pytest.mark.skipif(
    event_ruler is None,
    reason="event-ruler has no wheel for this Python; the fallback is checked against recorded answers",
)
def test_fallback_equals_event_ruler_on_the_template_rules(rules, envelope):
    """Both matchers, every `$or`-free branch of the template's rules, and callbacks built from
    every combination (none, one, two Contents[] items) of the event kinds and tags the rules
    mention, case variants and an unknown tag and kind, from the right and a wrong source."""
    branches = [branch for pattern in rules.values() for branch in expand_or(pattern)]
    kinds, tags = set(), set()
    for branch in branches:
        contents = branch["detail"]["Contents"]
        kinds.update(contents)
        tags.update(v for _, v in walk(contents) if isinstance(v, str))
    kinds = sorted(kinds) + ["CameraEvent"]
    tags = sorted(tags | {t.lower() for t in tags} | {t.upper() for t in tags} | {"Open", ""})
    items = [{kind: {"EventTag": tag}} for kind in kinds for tag in tags]
    items += [{kinds[0]: {"EventTag": [tags[0], "Other"]}}, {kinds[0]: {}}, {kinds[0]: tags[0]}, {"EventTag": tags[0]}]
    bodies = [{"Contents": []}] + [{"Contents": [i]} for i in items]
    bodies += [{"Contents": list(pair)} for pair in itertools.product(items[::3], items[1::3])]
    bodies += [{"Contents": items[0]}, {}]  # an object instead of an array; no Contents at all
    real, fallback = MATCHERS["event-ruler"], MATCHERS["python"]
    compared = hits = 0
    for body in bodies:
        for source in (None, "someone.else"):
            event = envelope(body, source)
            for branch in branches:
                expected = real(event, branch)
                assert fallback(event, branch) is expected, (event, branch)
                compared += 1
                hits += expected
    assert 0 < hits < compared  # the comparison saw matches and non-matches


def test_expand_or():
    pattern = {
        "source": ["s"],
        "detail": {"Contents": {"$or": [{"A": {"t": ["1"]}}, {"B": {"t": ["2"]}}]}},
    }
    assert expand_or(pattern) == [
        {"source": ["s"], "detail": {"Contents": {"A": {"t": ["1"]}}}},
        {"source": ["s"], "detail": {"Contents": {"B": {"t": ["2"]}}}},
    ]
    nested = {"$or": [{"a": ["1"]}, {"$or": [{"b": ["2"]}, {"c": ["3"]}]}], "d": ["4"]}
    assert expand_or(nested) == [
        {"a": ["1"], "d": ["4"]},
        {"b": ["2"], "d": ["4"]},
        {"c": ["3"], "d": ["4"]},
    ]
    assert expand_or({"x": {"$or": [{"y": ["1"]}], "z": ["2"]}}) == [{"x": {"y": ["1"], "z": ["2"]}}]
