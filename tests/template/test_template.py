"""template.yaml says what the deployment needs, and nothing looser.

cfn-lint and `sam validate --lint` run in scripts/test-all.sh; they don't catch a bad Runtime, a
Ref to a missing resource inside an AWS::Serverless::Function, a policy on `*`, a secret in an
environment variable, a timeout that outlives the MPU lease or a misspelt metric name in an alarm or
the dashboard. These tests do, on the template as written and on the SAM transform's output (the
CloudFormation that is really deployed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the `tomli` backport
    import tomli as tomllib

from cfn_model import (
    PSEUDO_PARAMETERS,
    REPO,
    getatt_target,
    load_template,
    names_referenced,
    references,
    render,
    resolve_sub,
    resources_of_type,
    sam_transform,
    walk,
)

BINARIES = {
    "stream-published",
    "stream-unpublished",
    "cdn-ingest",
    "room-status",
    "room-host",
    "room-settings",
    "repair",
}
STREAM = {"stream-published", "stream-unpublished"}
# The functions that run the room shell: they may Start a task (so their Timeout must cover waiting
# out a held StreamURL) and write the room's record and its decision history.
SHELL = STREAM | {"cdn-ingest", "room-host", "room-settings", "repair"}

# What each function may do, exactly (SAM adds sqs:SendMessage on the failure queue by itself).
_SHELL_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"}
ALLOWED_ACTIONS = {
    "stream-published": _SHELL_ACTIONS,
    "stream-unpublished": _SHELL_ACTIONS,
    "cdn-ingest": _SHELL_ACTIONS,
    "room-status": {"dynamodb:GetItem", "secretsmanager:GetSecretValue"},
    "room-host": _SHELL_ACTIONS,
    "room-settings": _SHELL_ACTIONS,
    # ...and Query, on the table's indexes only (test_function_policies_are_least_privilege).
    "repair": _SHELL_ACTIONS | {"dynamodb:Query"},
}

# The table's global secondary indexes: name -> (partition key, sort key), with their types.
INDEXES = {"due": ("shard", "due_at"), "tasks": ("shard", "task"), "hooks": ("shard", "hooks_due")}
ATTRIBUTE_TYPES = {"pk": "S", "shard": "S", "due_at": "N", "task": "S", "hooks_due": "N"}

# Every metric the functions publish (embedded metric format, no dimensions, in the namespace
# COSTREAM_METRICS_NAMESPACE). The alarms and the dashboard may name only these, and the dashboard
# shows all of them: a misspelt name in template.yaml would be an alarm or a graph that never has
# data, silently. The same list as `NAMES` in shared/app/src/metrics.rs (test_metrics_are_the_codes).
METRICS = [
    # callbacks by outcome
    "callbacks_applied",
    "callbacks_duplicate",
    "callbacks_rejected",
    "callbacks_failed",
    # MPU calls by action and outcome
    "mpu_start_ok",
    "mpu_start_refused",
    "mpu_start_in_doubt",
    "mpu_update_ok",
    "mpu_update_refused",
    "mpu_update_in_doubt",
    "mpu_update_task_missing",
    "mpu_stop_ok",
    "mpu_stop_refused",
    "mpu_stop_in_doubt",
    # room records
    "version_conflicts",
    # the repair loop
    "rooms_marked",
    "rooms_due",
    "rooms_repaired",
    "repair_failures",
    # the leak sweep
    "leaks_stopped",
    "tasks_restarted",
    "tasks_updated",
    "list_items_skipped",
    # a gauge (seconds): the age of the oldest due room
    "oldest_due_age_secs",
    # webhooks
    "webhooks_delivered",
    "webhooks_failed",
    "webhooks_dropped",
    # abuse limits: strict mode, the starts-per-minute cap
    "starts_refused_unregistered",
    "starts_capped",
    # CDN heals spaced per room (a heal inside the spacing waits for the repair loop)
    "heals_deferred",
    "webhooks_paced",
    # the write path under contention: callbacks committed by an append (the room was
    # contended), events held for the end grace, writes recognised as landed by their id after
    # a conflict or an error, writes given up after their budget (the room left to the loop)
    "events_appended",
    "events_held",
    "writes_landed",
    "writes_out_of_budget",
]
# Read as a maximum per minute; every other metric is a count, read as a sum per minute. (The code
# publishes `*_secs` in Seconds, everything else as a Count.)
GAUGES = {"oldest_due_age_secs"}
METRICS_NAMESPACE = {"Fn::Sub": "costream/${AWS::StackName}"}

SECRET_KEYS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "COSTREAM_PUSH_AUTH_KEY",
    "COSTREAM_PLAY_AUTH_KEY",
    "COSTREAM_CDN_NOTIFY_AUTH_KEY",
    "COSTREAM_ARTC_CALLBACK_SECRET",
    "COSTREAM_NOTIFY_SECRET",
    "COSTREAM_ARTC_APP_KEY",
}

# The secrets, one per concern: logical id -> the keys it holds (variable names the functions look
# up). Every key of SECRET_KEYS lives in exactly one of them.
SECRETS = {
    "MpuSecret": {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "COSTREAM_PUSH_AUTH_KEY"},
    "BackendSecret": {"COSTREAM_NOTIFY_SECRET"},
    "PlaybackSecret": {"COSTREAM_PLAY_AUTH_KEY"},
    "CdnCallbackSecret": {"COSTREAM_CDN_NOTIFY_AUTH_KEY"},
    "ArtcTokenSecret": {"COSTREAM_ARTC_APP_KEY"},
    # The operator's copy: the API route carries the path secret, no function reads it.
    "ArtcPathSecret": {"COSTREAM_ARTC_CALLBACK_SECRET"},
}

# The secret values each function uses, from the code (shared/app/src/config.rs and the handlers):
# the Live API's AccessKey and the StreamURL's push key wherever the shell may call MPU; the backend
# secret everywhere (webhook signatures when NotifyUrl is set, the backend's signed requests, viewer
# tokens); the play key where playback URLs are signed; the CDN key where CDN callbacks are
# verified; the ARTC AppKey where join tokens are issued. No function needs the ARTC path secret.
_LIVE_API = {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "COSTREAM_PUSH_AUTH_KEY"}
NEEDED_KEYS = {
    "stream-published": _LIVE_API | {"COSTREAM_NOTIFY_SECRET"},
    "stream-unpublished": _LIVE_API | {"COSTREAM_NOTIFY_SECRET"},
    "cdn-ingest": _LIVE_API | {"COSTREAM_NOTIFY_SECRET", "COSTREAM_CDN_NOTIFY_AUTH_KEY"},
    "room-status": {"COSTREAM_NOTIFY_SECRET", "COSTREAM_PLAY_AUTH_KEY"},
    "room-host": _LIVE_API | {"COSTREAM_NOTIFY_SECRET", "COSTREAM_ARTC_APP_KEY"},
    "room-settings": _LIVE_API | {"COSTREAM_NOTIFY_SECRET"},
    "repair": _LIVE_API | {"COSTREAM_NOTIFY_SECRET"},
}

REQUIRED_ENV = {
    "COSTREAM_TABLE",
    "COSTREAM_APP_ID",
    "COSTREAM_PUSH_DOMAIN",
    "COSTREAM_PLAY_DOMAIN",
    "COSTREAM_LIVE_APP_NAME",
    "COSTREAM_CALLBACK_HOST",
    "COSTREAM_NOTIFY_URL",
    "COSTREAM_MAX_IDLE_TIME",
    "COSTREAM_CANVAS",
    "COSTREAM_LAYOUT_STYLE",
    "COSTREAM_MAX_PANES",
    "COSTREAM_VIDEO_FPS",
    "COSTREAM_VIDEO_BITRATE_KBPS",
    "COSTREAM_BACKGROUND_IMAGE_URL",
    "COSTREAM_PANE_PLACEHOLDER_URL",
    "COSTREAM_METRICS_NAMESPACE",
}


def _rust_constant(path: str, pattern: str, fallback: float, unit: float) -> float:
    """A timing constant read from the Rust source, so the template follows the code. A constant
    that moved fails loudly (a fallback would let the bounds below pass whatever the code says);
    `fallback` is the value the bounds were designed for, checked in
    `test_timing_constants_are_what_the_template_was_designed_for`."""
    m = re.search(pattern, (REPO / path).read_text())
    assert m, f"could not find {pattern!r} in {path} (it moved: point this test at it)"
    value = float(m.group(1).replace("_", "")) * unit
    del fallback
    return value


# The MPU client's total deadline, the DynamoDB operation timeout, how long a Start waits out a held
# StreamURL and the shell's lease, in seconds.
MPU_DEADLINE = _rust_constant(
    "shared/alibaba/src/client.rs", r"deadline:\s*Duration::from_secs\((\d+)\)", 8, 1
)
DYNAMODB_TIMEOUT = _rust_constant(
    "shared/runtime/src/aws.rs", r"operation:\s*Duration::from_millis\(([\d_]+)\)", 4, 0.001
)
STREAM_URL_WAIT = _rust_constant(
    "shared/app/src/config.rs", r"stream_url_wait:\s*Duration::from_secs\((\d+)\)", 12, 1
)
LEASE = _rust_constant("shared/app/src/shell/mod.rs", r"lease_ms:\s*([\d_]+)", 45, 0.001)
# How long a stream function waits out an end grace before it merges the held event itself.
INLINE_GRACE_WAIT = _rust_constant(
    "shared/app/src/handlers.rs", r"INLINE_GRACE_WAIT_MS:\s*u64\s*=\s*([\d_]+)", 20, 0.001
)


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def deployed(template) -> dict:
    """The CloudFormation the SAM transform makes of the template."""
    return sam_transform(template)


@pytest.fixture(scope="module")
def functions(template) -> dict[str, tuple[str, dict]]:
    """Binary name -> (logical id, resource) for every SAM function."""
    out = {}
    for name, fn in resources_of_type(template, "AWS::Serverless::Function").items():
        binary = fn["Metadata"]["BuildProperties"]["Binary"]
        assert binary not in out, f"two functions build {binary}"
        out[binary] = (name, fn)
    return out


def fn_prop(template: dict, fn: dict, key: str):
    """A function property, falling back to Globals as SAM does."""
    return fn["Properties"].get(key, template.get("Globals", {}).get("Function", {}).get(key))


def secret_params(template: dict) -> set[str]:
    return {k for k, v in template["Parameters"].items() if v.get("NoEcho")}


# --- functions -------------------------------------------------------------------------------------


def test_is_a_sam_template(template):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


def test_one_function_per_binary(functions):
    assert set(functions) == BINARIES


def test_every_function_crate_has_a_function(functions):
    crates = {p.parent.name for p in (REPO / "functions").glob("*/Cargo.toml")}
    assert crates <= set(functions), f"crates without a function in template.yaml: {crates - set(functions)}"


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_binary_is_built_by_its_crate(binary):
    manifest = REPO / "functions" / binary / "Cargo.toml"
    if not manifest.exists():
        pytest.xfail(f"functions/{binary} does not exist yet")
    cargo = tomllib.loads(manifest.read_text())
    bins = {b["name"] for b in cargo.get("bin", [])} or {cargo["package"]["name"]}
    assert binary in bins, f"functions/{binary} builds {bins}, not {binary}"


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_function_shape(template, deployed, functions, binary):
    logical, fn = functions[binary]
    # As deployed, i.e. after SAM merged Globals into the function.
    props = deployed["Resources"][logical]["Properties"]
    assert props["Runtime"] == "provided.al2023"
    assert props["Handler"] == "bootstrap"
    assert props["Architectures"] == ["arm64"]
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    assert deployed["Resources"][getatt_target(props["LoggingConfig"]["LogGroup"])]["Type"] == "AWS::Logs::LogGroup"
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    # CodeUri is the workspace root: cargo-lambda runs `--bin <Binary>` there.
    code = REPO / fn_prop(template, fn, "CodeUri")
    workspace = tomllib.loads((code / "Cargo.toml").read_text())["workspace"]
    assert "functions/*" in workspace["members"]


def test_timing_constants_are_what_the_template_was_designed_for():
    assert (MPU_DEADLINE, DYNAMODB_TIMEOUT, STREAM_URL_WAIT, LEASE) == (8, 4, 12, 45), (
        "the MPU deadline, DynamoDB timeout, StreamURL wait or lease changed: "
        "revisit the Timeouts in template.yaml"
    )


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_timeout_is_inside_the_lease_and_outside_the_calls(template, functions, binary):
    _, fn = functions[binary]
    timeout = fn_prop(template, fn, "Timeout")
    # A holder killed by its timeout must not still be calling when its lease expires.
    assert timeout < LEASE
    assert timeout > DYNAMODB_TIMEOUT
    if binary in SHELL:
        # Any of these may Start a task, which may wait out a held StreamURL and then call once.
        assert STREAM_URL_WAIT + MPU_DEADLINE < timeout <= 30
    if binary in ("stream-published", "stream-unpublished"):
        # A stream function that waits out an end grace still makes the call it ends with (a
        # Stop) inside its timeout.
        assert INLINE_GRACE_WAIT + MPU_DEADLINE < timeout


def test_environment(template, functions):
    glob = template["Globals"]["Function"]["Environment"]["Variables"]
    assert REQUIRED_ENV <= set(glob), f"missing: {REQUIRED_ENV - set(glob)}"
    assert getatt_target(glob["COSTREAM_TABLE"]) == "RoomsTable"
    # Per function, never global: a function names only its own secrets.
    assert "COSTREAM_SECRET_ARN" not in glob
    for name in SECRETS:
        assert template["Resources"][name]["Type"] == "AWS::SecretsManager::Secret"
    assert template["Parameters"]["LiveAppName"]["Default"] == "live"


def test_every_deployed_function_has_the_metrics_namespace(deployed, functions):
    """As deployed (Globals merged), so a function's own Environment can't lose it."""
    deployed_functions = resources_of_type(deployed, "AWS::Lambda::Function")
    assert set(deployed_functions) == {logical for logical, _ in functions.values()}
    for logical, fn in deployed_functions.items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables.get("COSTREAM_METRICS_NAMESPACE") == METRICS_NAMESPACE, logical
        # Globals merged with the function's own variables: its secrets are there too.
        assert "COSTREAM_SECRET_ARN" in variables and REQUIRED_ENV <= set(variables), logical


def test_no_secret_in_any_environment(template, functions):
    envs = [template["Globals"]["Function"].get("Environment", {})]
    envs += [fn["Properties"].get("Environment", {}) for _, fn in functions.values()]
    for env in envs:
        variables = env.get("Variables", {})
        assert not SECRET_KEYS & set(variables), "secret keys must come from the secret, not the environment"
        leaked = names_referenced(variables) & secret_params(template)
        assert not leaked, f"NoEcho parameters in environment variables: {leaked}"


# --- secrets ---------------------------------------------------------------------------------------


def _secret_document(template, name) -> dict:
    """The JSON a secret holds, each parameter replaced by `<Name>`."""
    sub = template["Resources"][name]["Properties"]["SecretString"]["Fn::Sub"]
    params = secret_params(template)
    return json.loads(resolve_sub(sub, {p: f"<{p}>" for p in params}))


def test_secret_parameters_are_noecho(template):
    for name in SECRETS:
        secret = template["Resources"][name]["Properties"]["SecretString"]["Fn::Sub"]
        used = names_referenced({"Fn::Sub": secret})
        assert used <= set(template["Parameters"])
        not_hidden = {p for p in used if not template["Parameters"][p].get("NoEcho")}
        assert not not_hidden, f"{name}: parameters stored without NoEcho: {not_hidden}"


def test_secret_strings_are_the_json_the_functions_read(template):
    secrets = resources_of_type(template, "AWS::SecretsManager::Secret")
    assert set(secrets) == set(SECRETS)
    homes: dict[str, list[str]] = {}
    for name in SECRETS:
        document = _secret_document(template, name)
        assert set(document) == SECRETS[name], name
        assert all(re.fullmatch(r"<\w+>", v) for v in document.values()), "every value is one parameter"
        for key in document:
            homes.setdefault(key, []).append(name)
    # Every key has exactly one home: rotating it in one secret can't leave a stale copy elsewhere
    # (the runtime refuses a key found in two of a function's secrets anyway).
    assert set(homes) == SECRET_KEYS
    assert all(len(h) == 1 for h in homes.values()), homes
    # Every NoEcho parameter is stored somewhere (for the operator at least).
    stored = set().union(*(names_referenced(secrets[n]) for n in SECRETS))
    assert secret_params(template) <= stored, secret_params(template) - stored


def _function_secrets(fn: dict) -> tuple[list[str], list[str]]:
    """(the secrets named in the function's COSTREAM_SECRET_ARN, those its policy may read)."""
    value = fn["Properties"]["Environment"]["Variables"]["COSTREAM_SECRET_ARN"]
    separator, parts = value["Fn::Join"]
    assert separator == ","
    in_env = [getatt_target(p) for p in parts]
    readable = [
        getatt_target(r)
        for pol in fn["Properties"]["Policies"]
        for st in _statements(pol)
        if "secretsmanager:GetSecretValue" in _as_list(st["Action"])
        for r in _as_list(st["Resource"])
    ]
    return in_env, readable


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_each_function_gets_only_the_secrets_it_uses(template, functions, binary):
    _, fn = functions[binary]
    in_env, readable = _function_secrets(fn)
    # The variable names exactly what the policy allows, each once.
    assert len(in_env) == len(set(in_env)) and sorted(in_env) == sorted(readable), (in_env, readable)
    assert set(in_env) <= set(SECRETS)
    keys = set().union(*(SECRETS[name] for name in in_env))
    # Everything it needs, nothing it doesn't: each of its secrets holds at least one key it uses.
    assert keys == NEEDED_KEYS[binary], (binary, keys ^ NEEDED_KEYS[binary])


def test_room_status_never_sees_the_access_key(template, functions, deployed):
    logical, fn = functions["room-status"]
    in_env, readable = _function_secrets(fn)
    holders = {name for name, keys in SECRETS.items() if keys & {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}}
    assert holders == {"MpuSecret"}
    assert not holders & (set(in_env) | set(readable))
    # As deployed: the role's statements name no secret holding the AccessKey.
    role = deployed["Resources"][f"{logical}Role"]["Properties"]
    named = {getatt_target(r) for pol in role["Policies"] for st in _statements(pol["PolicyDocument"]) for r in _as_list(st["Resource"])}
    assert not named & holders
    # ...and its code starts without the Live API client (so without reading the AccessKey).
    main = _rust_source("functions/room-status/src/main.rs")
    assert "lambda::start_status()" in main and "lambda::start()" not in main


def test_no_function_reads_the_artc_path_secret(template, functions):
    for binary, (_, fn) in functions.items():
        in_env, readable = _function_secrets(fn)
        assert "ArtcPathSecret" not in set(in_env) | set(readable), binary


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_shell_functions_start_with_the_live_api(functions, binary):
    """A function given the AccessKey is one whose code starts the Live API client, and back."""
    _, fn = functions[binary]
    in_env, _ = _function_secrets(fn)
    main = _rust_source(f"functions/{binary}/src/main.rs")
    if "MpuSecret" in in_env:
        assert "lambda::start()" in main, binary
    else:
        assert "lambda::start()" not in main, binary


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a b", "\t"])
def test_secret_parameter_patterns_keep_the_json_valid(template, value):
    for name in secret_params(template):
        pattern = template["Parameters"][name]["AllowedPattern"]
        assert not re.fullmatch(pattern, value + "x" * 40), f"{name} accepts {value!r}"


def test_noecho_parameters_are_used_only_where_needed(template):
    """The secrets, and the ARTC route's path (the secret path is the route). Never an output."""
    allowed = set(SECRETS) | {"ArtcCallbackRoute"}
    for name, res in template["Resources"].items():
        used = names_referenced(res) & secret_params(template)
        assert not used or name in allowed, f"{name} uses NoEcho parameters {used}"
    assert not names_referenced(template["Outputs"]) & secret_params(template)


def test_optional_notify_secret_is_required_with_a_notify_url(template):
    rule = template["Rules"]["NotifySecretWithNotifyUrl"]
    assert names_referenced(rule["RuleCondition"]) == {"NotifyUrl"}
    assert names_referenced(rule["Assertions"]) == {"NotifySecret"}


# --- references ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["template", "deployed"])
def test_every_reference_resolves(request, which):
    tpl = request.getfixturevalue(which)
    known = set(tpl.get("Parameters", {})) | set(tpl["Resources"]) | PSEUDO_PARAMETERS
    dangling = [
        f"{kind} {target} at {'/'.join(map(str, path))}"
        for section in ("Globals", "Resources", "Outputs", "Rules", "Conditions")
        for kind, target, path in references(tpl.get(section, {}))
        if target not in known
    ]
    assert not dangling, "\n".join(dangling)


def test_conditions_exist(template):
    conditions = set(template.get("Conditions", {}))
    used = {res["Condition"] for res in template["Resources"].values() if "Condition" in res}
    assert used <= conditions


# --- IAM -------------------------------------------------------------------------------------------


def _statements(policy_doc: dict) -> list[dict]:
    st = policy_doc["Statement"]
    return st if isinstance(st, list) else [st]


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _assert_named_resources(statements: list[dict], where: str):
    for st in statements:
        for r in _as_list(st.get("Resource", [])):
            text = r.get("Fn::Sub") if isinstance(r, dict) else r
            assert not (isinstance(text, str) and "*" in text), f"{where}: wildcard resource {r!r}"


def _index_name(resource) -> str | None:
    """`idx` for `{"Fn::Sub": "${RoomsTable.Arn}/index/idx"}`, else None."""
    text = resource.get("Fn::Sub") if isinstance(resource, dict) else None
    m = re.fullmatch(r"\$\{RoomsTable\.Arn\}/index/([A-Za-z0-9_.-]+)", text) if isinstance(text, str) else None
    return m.group(1) if m else None


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_function_policies_are_least_privilege(template, functions, binary):
    _, fn = functions[binary]
    statements = [st for pol in fn["Properties"]["Policies"] for st in _statements(pol)]
    actions = {a for st in statements for a in _as_list(st["Action"])}
    assert actions == ALLOWED_ACTIONS[binary]
    assert all(st["Effect"] == "Allow" for st in statements)
    _assert_named_resources(statements, binary)
    for st in statements:
        for action in _as_list(st["Action"]):
            if action == "dynamodb:Query":
                # The table's indexes, each by name; never the table itself.
                indexes = [_index_name(r) for r in _as_list(st["Resource"])]
                assert sorted(indexes) == sorted(INDEXES), (binary, action, st["Resource"])
                continue
            if action == "secretsmanager:GetSecretValue":
                # Its own secrets (test_each_function_gets_only_the_secrets_it_uses says which).
                assert {getatt_target(r) for r in _as_list(st["Resource"])} <= set(SECRETS), binary
                continue
            assert [getatt_target(r) for r in _as_list(st["Resource"])] == ["RoomsTable"], (binary, action)


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_deployed_role_has_nothing_more(deployed, functions, binary):
    logical, _ = functions[binary]
    role = deployed["Resources"][f"{logical}Role"]["Properties"]
    basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    assert [m for m in role.get("ManagedPolicyArns", []) if m != basic] == []
    statements = [st for pol in role["Policies"] for st in _statements(pol["PolicyDocument"])]
    _assert_named_resources(statements, binary)
    actions = {a for st in statements for a in _as_list(st["Action"])}
    extra = {"sqs:SendMessage"} if binary in STREAM else set()
    assert actions == ALLOWED_ACTIONS[binary] | extra


def test_api_role_may_only_put_events_on_the_bus(template):
    role = template["Resources"]["ArtcCallbackIntegrationRole"]["Properties"]
    trust = _statements(role["AssumeRolePolicyDocument"])[0]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    # The confused-deputy conditions, under their opt-in parameter: this account's execute-api.
    cond, on, off = trust["Condition"]["Fn::If"]
    assert cond == "HasIntegrationTrustSourceCondition" and off == {"Ref": "AWS::NoValue"}
    assert on["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert on["ArnLike"]["aws:SourceArn"]["Fn::Sub"].startswith("arn:${AWS::Partition}:execute-api:")
    assert template["Parameters"]["IntegrationTrustSourceCondition"]["Default"] == "false"
    assert template["Conditions"]["HasIntegrationTrustSourceCondition"] == {
        "Fn::Equals": [{"Ref": "IntegrationTrustSourceCondition"}, "true"]
    }
    statements = [st for p in role["Policies"] for st in _statements(p["PolicyDocument"])]
    assert [(st["Action"], getatt_target(st["Resource"])) for st in statements] == [
        ("events:PutEvents", "ArtcEventBus")
    ]


# --- HTTP API --------------------------------------------------------------------------------------


def test_routes(template):
    routes = resources_of_type(template, "AWS::ApiGatewayV2::Route")
    keys = {}
    for name, r in routes.items():
        key = r["Properties"]["RouteKey"]
        keys[key["Fn::Sub"] if isinstance(key, dict) else key] = name
    assert set(keys) == {
        "POST /artc/${ArtcCallbackSecret}",
        "GET /cdn/ingest",
        "GET /rooms/{channelId}",
        "PUT /rooms/{channelId}/host",
        "GET /rooms/{channelId}/history",
        "POST /rooms/{channelId}/tokens",
        "PUT /rooms/{channelId}/settings",
        "PUT /rooms/{channelId}/pk",
        "DELETE /rooms/{channelId}/pk",
    }
    assert template["Parameters"]["ArtcCallbackSecret"]["NoEcho"] is True
    assert template["Parameters"]["ArtcAppKey"]["NoEcho"] is True
    for r in routes.values():
        assert getatt_target(r["Properties"]["ApiId"]) == "HttpApi"


def _integration(template, route_name):
    target = template["Resources"][route_name]["Properties"]["Target"]["Fn::Sub"]
    (integration,) = names_referenced({"Fn::Sub": target})
    assert target == f"integrations/${{{integration}}}"
    return template["Resources"][integration]["Properties"]


def test_artc_route_puts_the_body_on_the_bus(template):
    props = _integration(template, "ArtcCallbackRoute")
    assert props["IntegrationType"] == "AWS_PROXY"
    assert props["IntegrationSubtype"] == "EventBridge-PutEvents"
    assert getatt_target(props["CredentialsArn"]) == "ArtcCallbackIntegrationRole"
    params = props["RequestParameters"]
    assert params["Detail"] == "$request.body"
    assert params["DetailType"] == "artc-callback"
    assert params["Source"] == "costream.artc"
    assert getatt_target(params["EventBusName"]) == "ArtcEventBus"


@pytest.mark.parametrize(
    "route,binary,source_arn_suffix",
    [
        ("CdnIngestRoute", "cdn-ingest", "/*/GET/cdn/ingest"),
        ("RoomStatusRoute", "room-status", "/*/GET/rooms/*"),
        ("RoomHostRoute", "room-host", "/*/PUT/rooms/*/host"),
        # The backend-signed function serves the room's history too.
        ("RoomHistoryRoute", "room-host", "/*/GET/rooms/*/history"),
        ("RoomTokensRoute", "room-host", "/*/POST/rooms/*/tokens"),
        ("RoomSettingsRoute", "room-settings", "/*/PUT/rooms/*/settings"),
    ],
)
def test_function_routes(template, functions, route, binary, source_arn_suffix):
    logical, _ = functions[binary]
    props = _integration(template, route)
    assert props["IntegrationType"] == "AWS_PROXY"
    assert props["PayloadFormatVersion"] == "2.0"
    assert getatt_target(props["IntegrationUri"]) == logical
    perms = [
        p["Properties"]
        for p in resources_of_type(template, "AWS::Lambda::Permission").values()
        if getatt_target(p["Properties"]["FunctionName"]) == logical
    ]
    assert perms and all(p["Principal"] == "apigateway.amazonaws.com" for p in perms)
    # Exactly one permission lets API Gateway invoke the function for this route.
    matching = [p for p in perms if p["SourceArn"]["Fn::Sub"].endswith("${HttpApi}" + source_arn_suffix)]
    assert len(matching) == 1, [p["SourceArn"] for p in perms]


def test_every_api_permission_belongs_to_a_route(template):
    """No permission lets API Gateway invoke a function on a method and path no route has."""
    routes = {
        r["Properties"]["RouteKey"]
        for r in resources_of_type(template, "AWS::ApiGatewayV2::Route").values()
        if isinstance(r["Properties"]["RouteKey"], str)
    }
    patterns = {re.sub(r"\{[^}]+\}", "*", key.replace(" ", "")) for key in routes}
    for name, p in resources_of_type(template, "AWS::Lambda::Permission").items():
        if p["Properties"]["Principal"] != "apigateway.amazonaws.com":
            continue
        source = p["Properties"]["SourceArn"]["Fn::Sub"]
        prefix = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*/"
        assert source.startswith(prefix), name
        assert source[len(prefix) :] in patterns, (name, source)


def test_throttling(template):
    (stage,) = resources_of_type(template, "AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingBurstLimit"] and settings["ThrottlingRateLimit"]
    assert stage["Properties"]["StageName"] == "$default" and stage["Properties"]["AutoDeploy"] is True


# --- EventBridge, dead letters, alarms -------------------------------------------------------------


def test_rules_retry_and_dead_letter(template, functions):
    resources = template["Resources"]
    rules = resources_of_type(template, "AWS::Events::Rule")
    assert len(rules) == 2
    targeted = set()
    for name, rule in rules.items():
        props = rule["Properties"]
        assert getatt_target(props["EventBusName"]) == "ArtcEventBus"
        (target,) = props["Targets"]
        fn_logical = getatt_target(target["Arn"])
        targeted.add(resources[fn_logical]["Metadata"]["BuildProperties"]["Binary"])
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 86400
        dlq = getatt_target(target["DeadLetterConfig"]["Arn"])
        assert resources[dlq]["Type"] == "AWS::SQS::Queue"
        # EventBridge may invoke the function, from this rule only.
        perms = [
            p["Properties"]
            for p in resources_of_type(template, "AWS::Lambda::Permission").values()
            if getatt_target(p["Properties"]["FunctionName"]) == fn_logical
        ]
        assert [(p["Principal"], getatt_target(p["SourceArn"])) for p in perms] == [("events.amazonaws.com", name)]
        # ...and may write to the DLQ, from this rule only.
        policies = [
            p["Properties"]
            for p in resources_of_type(template, "AWS::SQS::QueuePolicy").values()
            if [getatt_target(q) for q in p["Properties"]["Queues"]] == [dlq]
        ]
        assert len(policies) == 1
        (st,) = _statements(policies[0]["PolicyDocument"])
        assert st["Principal"] == {"Service": "events.amazonaws.com"} and st["Action"] == "sqs:SendMessage"
        assert getatt_target(st["Resource"]) == dlq
        assert getatt_target(st["Condition"]["ArnEquals"]["aws:SourceArn"]) == name
    assert targeted == STREAM


@pytest.mark.parametrize("binary", sorted(STREAM))
def test_async_failures_go_to_a_queue(template, functions, binary):
    _, fn = functions[binary]
    config = fn["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert template["Resources"][getatt_target(on_failure["Destination"])]["Type"] == "AWS::SQS::Queue"


def test_table(template):
    (table,) = resources_of_type(template, "AWS::DynamoDB::Table").values()
    p = table["Properties"]
    assert p["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    # DynamoDB refuses an attribute definition that no key uses, so these are exactly the keys.
    assert {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]} == ATTRIBUTE_TYPES
    assert len(p["AttributeDefinitions"]) == len(ATTRIBUTE_TYPES)
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert p["DeletionProtectionEnabled"] == {"Ref": "DeletionProtection"}
    assert template["Parameters"]["DeletionProtection"]["AllowedValues"] == ["true", "false"]


def test_table_indexes_are_the_repair_work_lists(template):
    (table,) = resources_of_type(template, "AWS::DynamoDB::Table").values()
    p = table["Properties"]
    indexes = {i["IndexName"]: i for i in p["GlobalSecondaryIndexes"]}
    assert len(indexes) == len(p["GlobalSecondaryIndexes"]), "two indexes with one name"
    assert {
        name: tuple(k["AttributeName"] for k in i["KeySchema"]) for name, i in indexes.items()
    } == INDEXES
    for name, i in indexes.items():
        assert [k["KeyType"] for k in i["KeySchema"]] == ["HASH", "RANGE"], name
        # No room state: the function reads the record itself; a projection of it would double
        # every write. `due` carries only the failing age the alarm needs.
        expected = (
            {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["failing_since"]}
            if name == "due"
            else {"ProjectionType": "KEYS_ONLY"}
        )
        assert i["Projection"] == expected, name
        # On-demand like the table: provisioned throughput on an index would be refused.
        assert "ProvisionedThroughput" not in i, name
    # Sparse: every room has a shard, but only a room with something due / a task has the sort key.
    assert not {sort for _, sort in INDEXES.values()} & {"pk", "shard", "expires_at"}


def _alarms(template):
    return [a["Properties"] for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()]


def test_every_queue_has_a_depth_alarm(template):
    for queue in resources_of_type(template, "AWS::SQS::Queue"):
        alarms = [
            a
            for a in _alarms(template)
            if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
            and [getatt_target(d["Value"]) for d in a["Dimensions"]] == [queue]
        ]
        assert len(alarms) == 1, queue
        (a,) = alarms
        assert (a["Namespace"], a["ComparisonOperator"], a["Threshold"]) == ("AWS/SQS", "GreaterThanThreshold", 0)
        assert a["AlarmActions"]


def test_every_function_has_an_errors_alarm(template, functions):
    for logical, _ in functions.values():
        alarms = [
            a
            for a in _alarms(template)
            if a["MetricName"] == "Errors" and [getatt_target(d["Value"]) for d in a["Dimensions"]] == [logical]
        ]
        assert len(alarms) == 1, logical
        assert alarms[0]["Namespace"] == "AWS/Lambda" and alarms[0]["AlarmActions"]


def test_outputs(template):
    out = template["Outputs"]
    assert out["CdnNotifyUrl"]["Value"]["Fn::Sub"].endswith("/cdn/ingest")
    assert out["ArtcCallbackBaseUrl"]["Value"]["Fn::Sub"].endswith("/artc/")
    host = "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"
    assert out["CdnNotifyUrl"]["Value"]["Fn::Sub"].startswith(host)
    # The CDN signature covers the host the CDN calls: the same host the functions are told.
    env_host = template["Globals"]["Function"]["Environment"]["Variables"]["COSTREAM_CALLBACK_HOST"]["Fn::Sub"]
    assert host == f"https://{env_host}/"
    assert getatt_target(out["TableName"]["Value"]) == "RoomsTable"
    queue_outputs = {getatt_target(o["Value"]) for o in out.values()}
    assert set(resources_of_type(template, "AWS::SQS::Queue")) <= queue_outputs
    assert out["RoomHostUrl"]["Value"]["Fn::Sub"] == host + "rooms/{channelId}/host"
    assert out["RoomHistoryUrl"]["Value"]["Fn::Sub"] == host + "rooms/{channelId}/history"
    assert names_referenced(out["DashboardUrl"]["Value"]) == {"AWS::Region", "Dashboard"}
    # Each secret's ARN, for the operator (docs/deploy.md reads them); never a value.
    for name in SECRETS:
        assert getatt_target(out[f"{name}Arn"]["Value"]) == name


# --- repair ----------------------------------------------------------------------------------------


def test_repair_runs_every_minute_and_is_not_retried(template, deployed, functions):
    logical, fn = functions["repair"]
    (event,) = fn["Properties"]["Events"].values()
    assert event["Type"] == "Schedule"
    props = event["Properties"]
    assert props["Schedule"] == "rate(1 minute)"
    assert props.get("Enabled", True) is True and props.get("State", "ENABLED") == "ENABLED"
    # The next tick is the retry: neither EventBridge nor Lambda retries a tick.
    assert props["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    assert fn["Properties"]["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    # A pass ends before the next tick starts one.
    assert fn_prop(template, fn, "Timeout") < 60
    # As deployed: one schedule rule, targeting this function, which only that rule may invoke.
    schedules = {
        name: r["Properties"]
        for name, r in resources_of_type(deployed, "AWS::Events::Rule").items()
        if "ScheduleExpression" in r["Properties"]
    }
    (rule, schedule), = schedules.items()
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert [getatt_target(t["Arn"]) for t in schedule["Targets"]] == [logical]
    perms = [
        p["Properties"]
        for p in resources_of_type(deployed, "AWS::Lambda::Permission").values()
        if getatt_target(p["Properties"]["FunctionName"]) == logical
    ]
    assert [(p["Principal"], getatt_target(p["SourceArn"])) for p in perms] == [("events.amazonaws.com", rule)]


def test_only_repair_has_events(functions):
    """The other functions are invoked by the explicit rules and routes, nothing SAM adds."""
    with_events = {b for b, (_, fn) in functions.items() if fn["Properties"].get("Events")}
    assert with_events == {"repair"}


def test_repair_alarms_watch_the_loop_itself(template, functions):
    logical, _ = functions["repair"]
    alarms = [
        a
        for a in _alarms(template)
        if a["Namespace"] == "AWS/Lambda" and [getatt_target(d["Value"]) for d in a.get("Dimensions", [])] == [logical]
    ]
    by_metric = {a["MetricName"]: a for a in alarms}
    assert len(by_metric) == len(alarms) == 2
    not_running = by_metric["Invocations"]
    assert (
        not_running["Statistic"],
        not_running["Period"],
        not_running["EvaluationPeriods"],
        not_running["Threshold"],
        not_running["ComparisonOperator"],
        # No invocation means no datapoint at all: that is the case to catch.
        not_running["TreatMissingData"],
    ) == ("Sum", 300, 1, 1, "LessThanThreshold", "breaching")
    assert by_metric["Errors"]["ComparisonOperator"] == "GreaterThanThreshold"


# --- metrics: alarms and dashboard -----------------------------------------------------------------


def test_metric_list_is_well_formed():
    assert len(METRICS) == len(set(METRICS)) == 35
    assert GAUGES == {m for m in METRICS if m.endswith("_secs")}
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", m) for m in METRICS)


def _rust_source(path: str) -> str:
    try:
        return (REPO / path).read_text()
    except OSError:
        pytest.fail(f"{path} is gone: point this test at where the code keeps it now")


def test_metrics_are_the_codes():
    """METRICS is `metrics::NAMES`, in the same order, so the template follows the code."""
    source = _rust_source("shared/app/src/metrics.rs")
    m = re.search(r"pub const NAMES: &\[&str\] = &\[(.*?)\];", source, re.S)
    assert m, "no `pub const NAMES: &[&str] = &[...]` in shared/app/src/metrics.rs"
    assert re.findall(r'"([^"]*)"', m.group(1)) == METRICS


def test_indexes_are_the_stores():
    """The index names, their keys and the shard count the DynamoDB store uses."""
    source = _rust_source("shared/dynamo/src/lib.rs")
    consts = dict(re.findall(r'pub const (\w+_INDEX): &str = "([^"]+)";', source))
    assert {consts.get("DUE_INDEX"), consts.get("TASKS_INDEX"), consts.get("HOOKS_INDEX")} == set(INDEXES), consts
    assert re.search(r"pub const SHARDS: u64 = 8;", source), "the shard count changed: revisit template.yaml's comment"
    for attribute in ATTRIBUTE_TYPES:
        assert f'"{attribute}"' in source, f"the store never names the attribute {attribute!r}"


def _own_metric_alarms(template) -> dict[str, dict]:
    return {
        name: a["Properties"]
        for name, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
        if not (isinstance(a["Properties"]["Namespace"], str) and a["Properties"]["Namespace"].startswith("AWS/"))
    }


def test_alarms_on_the_functions_metrics(template):
    alarms = _own_metric_alarms(template)
    for name, a in alarms.items():
        assert a["Namespace"] == METRICS_NAMESPACE, name
        assert a["MetricName"] in METRICS, f"{name}: {a['MetricName']!r} is not a metric the functions publish"
        # The metrics are published without dimensions; an alarm with any would see no data.
        assert not a.get("Dimensions"), name
        assert a["Statistic"] == ("Maximum" if a["MetricName"] in GAUGES else "Sum"), name
        assert a["TreatMissingData"] == "notBreaching", name
        assert a["AlarmActions"] == a["OKActions"] == [{"Ref": "AlarmTopic"}], name
    shape = {
        name: (
            a["MetricName"],
            a["Statistic"],
            a["Period"],
            a["EvaluationPeriods"],
            a.get("DatapointsToAlarm", a["EvaluationPeriods"]),
            a["Threshold"],
            a["ComparisonOperator"],
        )
        for name, a in alarms.items()
    }
    assert shape == {
        "RepairFailuresAlarm": ("repair_failures", "Sum", 60, 5, 2, 1, "GreaterThanOrEqualToThreshold"),
        # A room due for more than 5 minutes.
        "OldestDueRoomAlarm": ("oldest_due_age_secs", "Maximum", 60, 2, 2, 300, "GreaterThanThreshold"),
        # Any webhook dropped undelivered.
        "WebhooksDroppedAlarm": ("webhooks_dropped", "Sum", 300, 1, 1, 1, "GreaterThanOrEqualToThreshold"),
        # Any Start refused by the per-app cap.
        "StartsCappedAlarm": ("starts_capped", "Sum", 60, 1, 1, 1, "GreaterThanOrEqualToThreshold"),
    }


def test_every_alarm_notifies_the_topic(template):
    for name, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        p = a["Properties"]
        assert p["AlarmActions"] == p["OKActions"] == [{"Ref": "AlarmTopic"}], name


STACK = "teststack"
REGION = "eu-west-1"
REPAIR_ALARMS = {"RepairFailuresAlarm", "OldestDueRoomAlarm", "RepairNotRunningAlarm", "RepairErrorsAlarm"}


def _dashboard(template) -> tuple[dict, dict]:
    (dashboard,) = resources_of_type(template, "AWS::CloudWatch::Dashboard").values()
    props = dashboard["Properties"]
    values = {"AWS::StackName": STACK, "AWS::Region": REGION}
    values |= {f"{name}.Arn": f"arn:{name}" for name in resources_of_type(template, "AWS::CloudWatch::Alarm")}
    return props, json.loads(resolve_sub(props["DashboardBody"]["Fn::Sub"], values))


def test_dashboard_shows_every_metric_once(template):
    props, body = _dashboard(template)
    assert props["DashboardName"] == {"Fn::Sub": "${AWS::StackName}-costream"}
    namespace = resolve_sub(METRICS_NAMESPACE["Fn::Sub"], {"AWS::StackName": STACK})
    shown = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        w = widget["properties"]
        assert w["region"] == REGION and w["period"] == 60, w["title"]
        for row in w["metrics"]:
            assert row[0] == namespace, (w["title"], row)
            metric, options = row[1], (row[2] if len(row) > 2 else {})
            stat = options.get("stat", w.get("stat"))
            assert stat == ("Maximum" if metric in GAUGES else "Sum"), (w["title"], metric, stat)
            assert "dimensions" not in options and len(row) <= 3, (w["title"], row)
            shown.append(metric)
    # The threshold line drawn on the gauge is the alarm's.
    (gauge,) = [w["properties"] for w in body["widgets"] if "annotations" in w.get("properties", {})]
    threshold = template["Resources"]["OldestDueRoomAlarm"]["Properties"]["Threshold"]
    assert [a["value"] for a in gauge["annotations"]["horizontal"]] == [threshold]
    assert sorted(shown) == sorted(METRICS), (
        f"not shown: {sorted(set(METRICS) - set(shown))}, unknown: {sorted(set(shown) - set(METRICS))}, "
        f"shown twice: {sorted({m for m in shown if shown.count(m) > 1})}"
    )


def test_dashboard_shows_the_repair_alarms(template):
    _, body = _dashboard(template)
    shown = [a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]]
    assert sorted(shown) == sorted(f"arn:{name}" for name in REPAIR_ALARMS)


def test_dashboard_widgets_fit_the_grid(template):
    _, body = _dashboard(template)
    cells = set()
    for w in body["widgets"]:
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24, w
        mine = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
        assert not cells & mine, f"overlapping widget {w['properties'].get('title')}"
        cells |= mine


# --- samconfig.toml --------------------------------------------------------------------------------


def test_samconfig_has_sane_defaults_and_no_secrets(template):
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True
    text = (REPO / "samconfig.toml").read_text()
    for name in secret_params(template):
        assert name not in text, f"samconfig.toml mentions the secret parameter {name}"
    for key in SECRET_KEYS:
        assert key not in text


# Template parameter -> the variable the functions parse it from, for the numeric ones.
NUMERIC_PARAMETERS = {
    "MaxPanes": "COSTREAM_MAX_PANES",
    "VideoFps": "COSTREAM_VIDEO_FPS",
    "VideoBitrateKbps": "COSTREAM_VIDEO_BITRATE_KBPS",
    "MaxIdleTime": "COSTREAM_MAX_IDLE_TIME",
    "MaxStartsPerMinute": "COSTREAM_MAX_STARTS_PER_MINUTE",
    "EndGraceSecs": "COSTREAM_END_GRACE_SECS",
}


def test_numeric_parameters_accept_exactly_what_the_code_accepts(template):
    """A value the template accepts but the code refuses would crash-loop every function at
    start; one the code accepts but the template refuses is a needless limit. Both must agree."""
    source = _rust_source("shared/app/src/config.rs")
    for param, var in NUMERIC_PARAMETERS.items():
        m = re.search(rf'env\.number\(\s*"{var}",\s*[0-9_]+,\s*([0-9_]+)\.\.=([0-9_]+),?\s*\)', source)
        assert m, f"no range for {var} in shared/app/src/config.rs"
        low, high = (int(g.replace("_", "")) for g in m.groups())
        p = template["Parameters"][param]
        if "AllowedPattern" in p:
            pattern = re.compile(p["AllowedPattern"])
            accepted = {n for n in range(0, high * 2) if pattern.fullmatch(str(n))}
            assert accepted == set(range(low, high + 1)), param
        else:
            assert (p["MinValue"], p["MaxValue"]) == (low, high), param


def test_the_canvas_parameter_accepts_exactly_the_sides_the_code_accepts(template):
    """Each side 1-1920 in the code (Canvas::MAX_SIDE); the template's two-digit minimum is
    stricter on purpose (a canvas under 10 px is a typo)."""
    source = _rust_source("shared/core/src/layout.rs")
    assert re.search(r"pub const MAX_SIDE: u32 = 1920;", source)
    pattern = re.compile(template["Parameters"]["Canvas"]["AllowedPattern"])
    sides = {n for n in range(0, 4000) if pattern.fullmatch(f"{n}x720")}
    assert sides == set(range(10, 1921))
    assert pattern.fullmatch("720x1280") and not pattern.fullmatch("720x1921")


@pytest.mark.parametrize("on", [True, False], ids=["trust-condition-on", "trust-condition-off"])
def test_the_integration_trust_renders_and_lints_either_way(template, on):
    """cfn-lint on the template as deployed with the confused-deputy trust conditions on, and off
    (no Condition key at all)."""
    from cfnlint.api import lint

    tpl = render(template, {"HasIntegrationTrustSourceCondition": on})
    trust = _statements(
        tpl["Resources"]["ArtcCallbackIntegrationRole"]["Properties"]["AssumeRolePolicyDocument"]
    )[0]
    assert ("aws:SourceAccount" in json.dumps(trust)) == on
    if not on:
        trust.pop("Condition")  # `Ref: AWS::NoValue`: CloudFormation drops the key
    matches = lint(json.dumps(tpl))
    assert not matches, "\n".join(str(m) for m in matches)


def test_the_bus_admits_only_the_integration_role_and_the_role_only_this_bus(template):
    res = template["Resources"]
    (policy,) = resources_of_type(template, "AWS::Events::EventBusPolicy").values()
    st = policy["Properties"]["Statement"]
    assert (st["Effect"], st["Principal"], st["Action"]) == ("Deny", "*", "events:PutEvents")
    assert getatt_target(st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == "ArtcCallbackIntegrationRole"
    # The role itself may only put events on this bus.
    role = res["ArtcCallbackIntegrationRole"]["Properties"]
    (statement,) = _statements(role["Policies"][0]["PolicyDocument"])
    assert (statement["Action"], getatt_target(statement["Resource"])) == ("events:PutEvents", "ArtcEventBus")


def test_callbacks_are_archived_briefly_and_the_table_outlives_the_stack(template):
    res = template["Resources"]
    archive = res["ArtcEventArchive"]["Properties"]
    assert archive["RetentionDays"] == {"Ref": "ArchiveRetentionDays"}
    assert template["Parameters"]["ArchiveRetentionDays"]["Default"] == 1
    table = res["RoomsTable"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
