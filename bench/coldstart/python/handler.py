"""stream-published written the usual way in Python, for the cold-start comparison only.

The same job as functions/stream-published on an ARTC Publish callback delivered by
EventBridge, on the official SDKs (boto3, alibabacloud-live20161101) under awslambdaric:

  init   : configuration from the environment plus the Secrets Manager secrets named by
           COSTREAM_SECRET_ARN (comma-separated; one GetSecretValue each), a DynamoDB client, a
           Live API client
  invoke : GetItem (consistent) of the room -> TransactWriteItems (the room's new facts, taking
           the lease, conditional on its version + the app's starts-per-minute budget) ->
           StartLiveMPUTask (MixMode 0, the host's camera, a signed StreamURL) ->
           TransactWriteItems (the task applied and the lease released, conditional on the
           version + the room's history entry)

The same requests, in the same order and of the same shape, as the Rust function makes for
this event at a937d94 (a GetSecretValue per secret, 3 DynamoDB requests, 1 Live API call;
scripts/bench-cold-start.sh prints the counts of both, so a drift shows).

It implements only the first-publisher-starts-a-task path (no layout engine, no Update/Stop, no
retries beyond the SDKs' own): a lower bound on the Python work, which makes the comparison
favour Python.
"""

import time

_T0 = time.perf_counter()  # the module's own init, timed for the benchmark's breakdown

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import boto3  # noqa: E402
from alibabacloud_live20161101 import models as live_models  # noqa: E402
from alibabacloud_live20161101.client import Client as LiveClient  # noqa: E402
from alibabacloud_tea_openapi import models as openapi_models  # noqa: E402
from darabonba.runtime import RuntimeOptions  # noqa: E402

# --- init (Lambda's Init phase) -------------------------------------------------------------------
_T_IMPORTS = time.perf_counter()
_session = boto3.session.Session()
_secret = {}
_arns = [a.strip() for a in os.environ.get("COSTREAM_SECRET_ARN", "").split(",") if a.strip()]
if _arns:
    _sm = _session.client("secretsmanager")
    for _arn in _arns:  # one after the other, the usual way
        _secret.update(json.loads(_sm.get_secret_value(SecretId=_arn)["SecretString"]))
_T_SECRET = time.perf_counter()


def _var(name, default=None):
    value = os.environ.get(name) or _secret.get(name)
    return value if value else default


APP_ID = _var("COSTREAM_APP_ID")
TABLE = _var("COSTREAM_TABLE")
PUSH_DOMAIN = _var("COSTREAM_PUSH_DOMAIN")
LIVE_APP_NAME = _var("COSTREAM_LIVE_APP_NAME", "live")
PUSH_AUTH_KEY = _var("COSTREAM_PUSH_AUTH_KEY")
MAX_IDLE_TIME = _var("COSTREAM_MAX_IDLE_TIME", "120")
MAX_STARTS_PER_MINUTE = int(_var("COSTREAM_MAX_STARTS_PER_MINUTE", "120"))
URL_TTL_SECS = int(_var("COSTREAM_INGEST_URL_TTL_SECS", "86400"))
for _name, _value in (("COSTREAM_APP_ID", APP_ID), ("COSTREAM_TABLE", TABLE),
                      ("COSTREAM_PUSH_DOMAIN", PUSH_DOMAIN)):
    if not _value:
        raise RuntimeError(f"missing required environment variable {_name}")

_dynamodb = _session.client("dynamodb")

_endpoint = _var("ALIBABA_CLOUD_LIVE_ENDPOINT", "https://live.aliyuncs.com/")
_scheme, _, _host = _endpoint.partition("://")
_live = LiveClient(
    openapi_models.Config(
        access_key_id=_var("ALIBABA_CLOUD_ACCESS_KEY_ID"),
        access_key_secret=_var("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        endpoint=_host.rstrip("/"),
        protocol=_scheme.upper(),
        region_id="cn-shanghai",
        # RPC signature V1 (HMAC-SHA1), what the Rust client and the simulator speak.
        signature_algorithm="v2",
        connect_timeout=1000,
        read_timeout=3000,
    )
)
_runtime = RuntimeOptions(autoretry=True, max_attempts=3)
# One line for the benchmark (bench.py reads it from the process's output): where init went.
print(json.dumps({"bench_init_ms": {
    "imports": round((_T_IMPORTS - _T0) * 1e3, 2),
    "secret": round((_T_SECRET - _T_IMPORTS) * 1e3, 2),
    "clients": round((time.perf_counter() - _T_SECRET) * 1e3, 2),
}}), flush=True)


# --- the handler (Lambda's Invoke phase) ------------------------------------------------------------
def _stream_url(stream: str, now: int) -> str:
    path = f"/{LIVE_APP_NAME}/{stream}"
    url = f"rtmp://{PUSH_DOMAIN}{path}"
    if not PUSH_AUTH_KEY:
        return url
    expires = now + URL_TTL_SECS
    digest = hashlib.md5(f"{path}-{expires}-0-0-{PUSH_AUTH_KEY}".encode()).hexdigest()
    return f"{url}?auth_key={expires}-0-0-{digest}"


def handler(event, context):
    detail = event["detail"]
    if detail.get("AppId") != APP_ID:
        return {"result": "rejected", "reason": "wrong app"}
    channel = detail["ChannelID"]
    publishes = [
        c["UserEvent"]
        for c in detail.get("Contents", [])
        if c.get("Event") == "UserEvent" and c["UserEvent"].get("EventTag") == "Publish"
    ]
    if not publishes:
        return {"result": "unchanged", "channel_id": channel}
    host = min(publishes, key=lambda u: u["Timestamp"])
    pk = {"S": f"ROOM#{APP_ID}#{channel}"}

    item = _dynamodb.get_item(TableName=TABLE, Key={"pk": pk}, ConsistentRead=True).get("Item")
    version = int(item["version"]["N"]) if item else 0
    facts = json.loads(item["facts"]["S"]) if item else {"users": {}}
    record = json.loads(item["record"]["S"]) if item else None
    if detail["MsgId"] in facts.get("seen", []):
        return {"result": "duplicate", "channel_id": channel}
    facts.setdefault("seen", []).append(detail["MsgId"])
    for c in detail.get("Contents", []):
        u = c.get("UserEvent") or {}
        if u.get("UserId"):
            user = facts["users"].setdefault(u["UserId"], {"marks": []})
            user["marks"].append([u["Timestamp"], u["EventTag"], u.get("SessionId")])
    if record is not None:
        # A task already runs for this room: the Rust function would Update it; not modelled.
        return {"result": "unchanged", "channel_id": channel}

    now = int(time.time())
    now_ms = int(time.time() * 1000)
    task_id = f"{channel}_{host['Timestamp']}"
    stream = f"{channel}_main"
    shard = {"S": f"{APP_ID}#{sum(channel.encode()) % 8}"}
    facts_json = {"S": json.dumps(facts, separators=(",", ":"))}
    running = {"task": task_id, "shape": {"Single": {"user": host["UserId"]}}}

    # The commit: the room's new facts with the lease and the task it is about to start (in
    # doubt), and one of the app's Starts for this minute, in one transaction.
    room = {
        "pk": pk, "shard": shard, "version": {"N": str(version + 1)}, "facts": facts_json,
        "seen": {"S": "[]"}, "task": {"S": task_id}, "due_at": {"N": str(now_ms + 51_000)},
        "lease_owner": {"S": context.aws_request_id}, "lease_until": {"N": str(now_ms + 45_000)},
        "record": {"S": json.dumps({"running": {"On": running}, "doubt": True})},
    }
    condition = {"ConditionExpression": "attribute_not_exists(pk)"} if item is None else {
        "ConditionExpression": "#v = :expected",
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":expected": {"N": str(version)}},
    }
    minute = now // 60
    try:
        _dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": TABLE, "Item": room, **condition}},
            {"Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"STARTS#{APP_ID}#{minute}"}},
                "UpdateExpression": "SET #n = if_not_exists(#n, :zero) + :one, expires_at = :exp",
                "ConditionExpression": "attribute_not_exists(#n) OR #n < :cap",
                "ExpressionAttributeNames": {"#n": "n"},
                "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"},
                                              ":cap": {"N": str(MAX_STARTS_PER_MINUTE)},
                                              ":exp": {"N": str(minute * 60 + 3600)}},
            }},
        ])
    except _dynamodb.exceptions.TransactionCanceledException:
        return {"result": "deferred", "channel_id": channel}

    _live.start_live_mputask_with_options(
        live_models.StartLiveMPUTaskRequest(
            app_id=APP_ID,
            channel_id=channel,
            task_id=task_id,
            mix_mode="0",
            single_sub_params=live_models.StartLiveMPUTaskRequestSingleSubParams(
                user_id=host["UserId"], source_type="camera", stream_type="0"
            ),
            stream_url=_stream_url(stream, now),
            max_idle_time=MAX_IDLE_TIME,
        ),
        _runtime,
    )

    # The record: the task applied, the lease released, and the room's history entry, in one
    # transaction.
    done_ms = int(time.time() * 1000)
    room = {
        "pk": pk, "shard": shard, "version": {"N": str(version + 2)}, "facts": facts_json,
        "seen": {"S": "[]"}, "task": {"S": task_id}, "due_at": {"N": str(done_ms + 43_200_000)},
        "upkeep": {"S": json.dumps({"signed_ms": done_ms})},
        "record": {"S": json.dumps({"running": {"On": running}})},
    }
    entry = {"version": version + 1, "at_ms": done_ms,
             "trigger": f"publish {host['UserId']} @{host['Timestamp']}",
             "command": f"start {task_id} mix_mode=0 users=[{host['UserId']}]", "outcome": "ok"}
    _dynamodb.transact_write_items(TransactItems=[
        {"Put": {"TableName": TABLE, "Item": room, "ConditionExpression": "#v = :expected",
                 "ExpressionAttributeNames": {"#v": "version"},
                 "ExpressionAttributeValues": {":expected": {"N": str(version + 1)}}}},
        {"Put": {"TableName": TABLE,
                 "Item": {"pk": {"S": f"HIST#{APP_ID}#{channel}#{(version + 1) % 16:02}"},
                          "v": {"N": str(version + 1)},
                          "entry": {"S": json.dumps(entry)},
                          "expires_at": {"N": str(now + 30 * 86400)}},
                 "ConditionExpression": "attribute_not_exists(pk) OR v < :v",
                 "ExpressionAttributeValues": {":v": {"N": str(version + 1)}}}},
    ])
    return {"result": "applied", "channel_id": channel, "task_id": task_id}
