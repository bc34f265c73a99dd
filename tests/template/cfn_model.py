"""Reading template.yaml the way CloudFormation does, for the template tests.

Owns: loading the template with cfn-lint's YAML decoder (which turns !Ref / !Sub / !GetAtt tags into
their long forms), running the real SAM transform offline, and small walkers over intrinsic
functions. Holds no assertions: the tests do.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}

# `${Name}` or `${Name.Attr}` inside Fn::Sub; `${!Literal}` is an escape and names nothing.
_SUB_VAR = re.compile(r"\$\{(?!!)([^}]+)\}")


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain JSON-like data, intrinsic tags in long form (`{"Ref": ...}`)."""
    return json.loads(json.dumps(cfn_yaml.load(str(path))))


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """Runs the AWS::Serverless transform offline (the same translator `sam` and CloudFormation
    use). CodeUri must be an S3 URI for the translator, so local paths are swapped for a dummy."""
    from samtranslator.translator.transform import transform

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    tpl = copy.deepcopy(template)
    tpl.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for res in tpl["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://bucket/key"
    # The translator asks boto for a region; any will do.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(tpl, {}, _NoManagedPolicies())


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, node) below `node`, depth first."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def sub_names(sub: Any) -> set[str]:
    """Names a Fn::Sub refers to (`X` for `${X}` and `${X.Attr}`), minus its own variable map."""
    if isinstance(sub, list):
        text, local = sub[0], set(sub[1]) if len(sub) > 1 else set()
    else:
        text, local = sub, set()
    names = {m.group(1).split(".")[0] for m in _SUB_VAR.finditer(text)}
    return {n for n in names if n not in local}


def references(node: Any) -> Iterator[tuple[str, str, tuple]]:
    """Every (kind, target, path) of Ref, Fn::GetAtt and Fn::Sub below `node`."""
    for path, n in walk(node):
        if not isinstance(n, dict) or len(n) != 1:
            continue
        (key, value), = n.items()
        if key == "Ref" and isinstance(value, str):
            yield "Ref", value, path
        elif key == "Fn::GetAtt":
            target = value[0] if isinstance(value, list) else value.split(".")[0]
            yield "Fn::GetAtt", target, path
        elif key == "Fn::Sub":
            for name in sub_names(value):
                yield "Fn::Sub", name, path


def names_referenced(node: Any) -> set[str]:
    return {target for _, target, _ in references(node)}


def resolve_sub(sub: str, values: dict[str, str]) -> str:
    """Substitutes `${Name}` in a Fn::Sub string from `values` (a KeyError names what's missing)."""
    return _SUB_VAR.sub(lambda m: values[m.group(1)], sub)


def getatt_target(node: Any) -> str | None:
    """The logical id of `{"Fn::GetAtt": [X, ...]}` or `{"Ref": X}`, else None."""
    if isinstance(node, dict) and len(node) == 1:
        (key, value), = node.items()
        if key == "Ref":
            return value
        if key == "Fn::GetAtt":
            return value[0] if isinstance(value, list) else value.split(".")[0]
    return None


def expand_or(pattern: Any) -> list[Any]:
    """An EventBridge pattern with `$or` as the equivalent list of `$or`-free patterns.

    EventBridge matches `{"$or": [A, B], ...rest}` when `A + rest` or `B + rest` matches, at any
    depth. The matcher used by the routing test (Quamina, the engine by event-ruler's author)
    expresses OR as several patterns for the same target, so the union of the expansions is the
    rule's meaning.
    """
    if not isinstance(pattern, dict):
        return [pattern]
    alternatives: list[list[dict[str, Any]]] = []
    for key, value in pattern.items():
        if key == "$or":
            branches = [b for branch in value for b in expand_or(branch)]
            alternatives.append(branches)
        else:
            alternatives.append([{key: v} for v in expand_or(value)])
    out = []
    for combo in itertools.product(*alternatives):
        merged: dict[str, Any] = {}
        for part in combo:
            for k, v in part.items():
                merged[k] = _merge(merged[k], v) if k in merged else v
        out.append(merged)
    return out


def _merge(a: Any, b: Any) -> Any:
    """Merges two pattern fragments for the same key (a `$or` branch next to sibling fields)."""
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for k, v in b.items():
            merged[k] = _merge(merged[k], v) if k in merged else v
        return merged
    raise ValueError(f"conflicting pattern fragments {a!r} and {b!r}")


def render(template: dict[str, Any], conditions: dict[str, bool]) -> dict[str, Any]:
    """The template as deployed with the given conditions' values: what is under a false condition
    is gone (resources, outputs, `Fn::If` branches), a true condition's `Condition` keys are dropped,
    the rendered conditions leave `Conditions`, and parameters nothing refers to any more leave
    `Parameters` (and the console's parameter groups). Linting both renderings of an optional
    feature checks each deployed shape on its own: e.g. a resource that is always created must not
    refer to one that exists only when the feature is on."""
    tpl = copy.deepcopy(template)

    def keep(section: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, item in section.items():
            cond = item.get("Condition") if isinstance(item, dict) else None
            if cond in conditions:
                if not conditions[cond]:
                    continue
                item = {k: v for k, v in item.items() if k != "Condition"}
            out[name] = item
        return out

    def resolve_ifs(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1 and "Fn::If" in node and node["Fn::If"][0] in conditions:
                name, when_true, when_false = node["Fn::If"]
                return resolve_ifs(when_true if conditions[name] else when_false)
            return {k: resolve_ifs(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve_ifs(v) for v in node]
        return node

    tpl["Resources"] = keep(tpl["Resources"])
    if "Outputs" in tpl:
        tpl["Outputs"] = keep(tpl["Outputs"])
    tpl = resolve_ifs(tpl)
    for name in conditions:
        tpl.get("Conditions", {}).pop(name, None)
    if not tpl.get("Conditions"):
        tpl.pop("Conditions", None)
    used = set()
    for section in ("Globals", "Resources", "Outputs", "Rules", "Conditions"):
        used |= names_referenced(tpl.get(section, {}))
    unused = {p for p in tpl.get("Parameters", {}) if p not in used}
    for p in unused:
        del tpl["Parameters"][p]
    groups = tpl.get("Metadata", {}).get("AWS::CloudFormation::Interface", {}).get("ParameterGroups", [])
    for group in groups:
        group["Parameters"] = [p for p in group["Parameters"] if p not in unused]
    if groups:
        tpl["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"] = [g for g in groups if g["Parameters"]]
    return tpl
