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
"""

from __future__ import annotations

import json
from pathlib import Path

import event_ruler
import pytest

from cfn_model import expand_or, getatt_target, load_template, resources_of_type

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
    "camera_open_2021.json": set(),
}


def matches(event: dict, pattern: dict) -> bool:
    return bool(
        any(
            event_ruler.test_event_pattern(json.dumps(event), json.dumps(branch))
            for branch in expand_or(pattern)
        )
    )


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


def routed(rules: dict[str, dict], event: dict) -> set[str]:
    return {binary for binary, pattern in rules.items() if matches(event, pattern)}


def test_every_sample_has_an_expectation():
    assert {p.name for p in SAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_callback_reaches_exactly_the_right_functions(sample, rules, envelope):
    body = json.loads((SAMPLES / sample).read_text())
    assert routed(rules, envelope(body)) == EXPECTED[sample]


def test_events_from_another_source_reach_nothing(rules, envelope):
    body = json.loads((SAMPLES / "publish_and_leave.json").read_text())
    assert routed(rules, envelope(body, source="someone.else")) == set()


def test_every_user_tag_is_routed_somewhere(rules, envelope):
    """The five documented UserEvent tags each reach at least one function."""
    for tag in ["Join", "Leave", "Publish", "Unpublish", "Roleupdate"]:
        body = json.loads((SAMPLES / "publish.json").read_text())
        body["Contents"][0]["UserEvent"]["EventTag"] = tag
        assert routed(rules, envelope(body)), f"{tag} reaches no function"


# --- the tools the test relies on ------------------------------------------------------------------


def test_matcher_applies_the_array_rule():
    event = {"detail": {"Contents": [{"UserEvent": {"EventTag": "Leave"}}, {"UserEvent": {"EventTag": "Publish"}}]}}
    assert matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Publish"]}}}})
    assert matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Leave"]}}}})
    assert not matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Join"]}}}})
    assert not matches(event, {"detail": {"Contents": {"ChannelEvent": {"EventTag": ["Close"]}}}})


def test_matcher_is_case_sensitive_like_eventbridge():
    event = {"detail": {"Contents": [{"UserEvent": {"EventTag": "publish"}}]}}
    assert not matches(event, {"detail": {"Contents": {"UserEvent": {"EventTag": ["Publish"]}}}})


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
