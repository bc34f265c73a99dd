"""template.yaml says what the deployment needs, and nothing looser.

cfn-lint and `sam validate --lint` run in scripts/test-all.sh; they don't catch a bad Runtime, a
Ref to a missing resource inside an AWS::Serverless::Function, a policy on `*`, a secret in an
environment variable or a timeout that outlives the MPU lease. These tests do, on the template as
written and on the SAM transform's output (the CloudFormation that is really deployed).
"""

from __future__ import annotations

import json
import re
import warnings
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
    resolve_sub,
    resources_of_type,
    sam_transform,
    walk,
)

BINARIES = {"stream-published", "stream-unpublished", "cdn-ingest", "room-status", "room-host"}
STREAM = {"stream-published", "stream-unpublished"}

# What each function may do, exactly (SAM adds sqs:SendMessage on the failure queue by itself).
ALLOWED_ACTIONS = {
    "stream-published": {"dynamodb:GetItem", "dynamodb:PutItem", "secretsmanager:GetSecretValue"},
    "stream-unpublished": {"dynamodb:GetItem", "dynamodb:PutItem", "secretsmanager:GetSecretValue"},
    "cdn-ingest": {"dynamodb:GetItem", "dynamodb:PutItem", "secretsmanager:GetSecretValue"},
    "room-status": {"dynamodb:GetItem", "secretsmanager:GetSecretValue"},
    "room-host": {"dynamodb:GetItem", "dynamodb:PutItem", "secretsmanager:GetSecretValue"},
}

SECRET_KEYS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "COSTREAM_PUSH_AUTH_KEY",
    "COSTREAM_PLAY_AUTH_KEY",
    "COSTREAM_CDN_NOTIFY_AUTH_KEY",
    "COSTREAM_ARTC_CALLBACK_SECRET",
    "COSTREAM_NOTIFY_SECRET",
}

REQUIRED_ENV = {
    "COSTREAM_TABLE",
    "COSTREAM_SECRET_ARN",
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
}


def _rust_constant(path: str, pattern: str, fallback: float, unit: float) -> float:
    """A timing constant read from the Rust source, so the template follows the code. Falls back
    (with a warning) if the code moved: the fallback is the value these bounds were designed for."""
    try:
        m = re.search(pattern, (REPO / path).read_text())
    except OSError:
        m = None
    if not m:
        warnings.warn(f"could not find {pattern!r} in {path}; using {fallback}")
        return fallback
    return float(m.group(1).replace("_", "")) * unit


# The MPU client's total deadline, the DynamoDB operation timeout, how long a Start waits out a held
# StreamURL and the shell's lease, in seconds.
MPU_DEADLINE = _rust_constant(
    "shared/alibaba/src/client.rs", r"deadline:\s*Duration::from_secs\((\d+)\)", 8, 1
)
DYNAMODB_TIMEOUT = _rust_constant(
    "shared/runtime/src/aws.rs", r"operation:\s*Duration::from_millis\(([\d_]+)\)", 4, 0.001
)
STREAM_URL_WAIT = _rust_constant(
    "shared/runtime/src/init.rs", r"stream_url_wait:\s*Duration::from_secs\((\d+)\)", 12, 1
)
LEASE = _rust_constant("shared/app/src/shell.rs", r"lease_ms:\s*([\d_]+)", 45, 0.001)


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
    if binary in STREAM or binary in {"cdn-ingest", "room-host"}:
        # Any of these may Start a task, which may wait out a held StreamURL and then call once.
        assert STREAM_URL_WAIT + MPU_DEADLINE < timeout <= 30


def test_environment(template, functions):
    glob = template["Globals"]["Function"]["Environment"]["Variables"]
    assert REQUIRED_ENV <= set(glob), f"missing: {REQUIRED_ENV - set(glob)}"
    assert getatt_target(glob["COSTREAM_TABLE"]) == "RoomsTable"
    assert getatt_target(glob["COSTREAM_SECRET_ARN"]) == "CostreamSecret"
    assert template["Resources"]["CostreamSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert template["Parameters"]["LiveAppName"]["Default"] == "live"


def test_no_secret_in_any_environment(template, functions):
    envs = [template["Globals"]["Function"].get("Environment", {})]
    envs += [fn["Properties"].get("Environment", {}) for _, fn in functions.values()]
    for env in envs:
        variables = env.get("Variables", {})
        assert not SECRET_KEYS & set(variables), "secret keys must come from the secret, not the environment"
        leaked = names_referenced(variables) & secret_params(template)
        assert not leaked, f"NoEcho parameters in environment variables: {leaked}"


# --- secrets ---------------------------------------------------------------------------------------


def test_secret_parameters_are_noecho(template):
    secret = template["Resources"]["CostreamSecret"]["Properties"]["SecretString"]["Fn::Sub"]
    used = names_referenced({"Fn::Sub": secret})
    assert used <= set(template["Parameters"])
    not_hidden = {p for p in used if not template["Parameters"][p].get("NoEcho")}
    assert not not_hidden, f"parameters stored in the secret without NoEcho: {not_hidden}"


def test_secret_string_is_the_json_the_functions_read(template):
    sub = template["Resources"]["CostreamSecret"]["Properties"]["SecretString"]["Fn::Sub"]
    params = secret_params(template)
    document = json.loads(resolve_sub(sub, {p: f"<{p}>" for p in params}))
    assert set(document) == SECRET_KEYS
    assert all(re.fullmatch(r"<\w+>", v) for v in document.values()), "every value is one parameter"


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a b", "\t"])
def test_secret_parameter_patterns_keep_the_json_valid(template, value):
    for name in secret_params(template):
        pattern = template["Parameters"][name]["AllowedPattern"]
        assert not re.fullmatch(pattern, value + "x" * 40), f"{name} accepts {value!r}"


def test_noecho_parameters_are_used_only_where_needed(template):
    """The secret, and the ARTC route's path (the secret path is the route). Never an output."""
    allowed = {"CostreamSecret", "ArtcCallbackRoute"}
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
            assert not (isinstance(r, str) and "*" in r), f"{where}: wildcard resource {r!r}"


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
            target = {"dynamodb": "RoomsTable", "secretsmanager": "CostreamSecret"}[action.split(":")[0]]
            assert [getatt_target(r) for r in _as_list(st["Resource"])] == [target], (binary, action)


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
    principal = _statements(role["AssumeRolePolicyDocument"])[0]["Principal"]
    assert principal == {"Service": "apigateway.amazonaws.com"}
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
    }
    assert template["Parameters"]["ArtcCallbackSecret"]["NoEcho"] is True
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
    assert len(perms) == 1 and perms[0]["Principal"] == "apigateway.amazonaws.com"
    assert perms[0]["SourceArn"]["Fn::Sub"].endswith("${HttpApi}" + source_arn_suffix)


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
    assert p["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert p["DeletionProtectionEnabled"] == {"Ref": "DeletionProtection"}
    assert template["Parameters"]["DeletionProtection"]["AllowedValues"] == ["true", "false"]


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
