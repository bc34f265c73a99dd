"""Cold-start benchmark driver (run by scripts/bench-cold-start.sh, which starts moto and the
simulated Live API and builds the binaries).

Each function is started fresh under the local Runtime API emulator (emulator.py) and given one
realistic event; per cold start it records init time, first-invoke time, peak RSS, and the
requests the process made to moto (DynamoDB + Secrets Manager) and to the simulated Live API.
Rounds are interleaved (every function once per round) so drift in the machine's load hits all
rows alike; round 0 is a warm-up (page cache, moto's lazy imports) and is not counted.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
import uuid

import re

import boto3
import yaml

from emulator import RuntimeApi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

APP_ID = "benchapp01"
# The Python twin and the no-Secrets-Manager rows run as other ARTC apps: their rooms and tasks
# stay out of the Rust repair pass (which lists its own app's tasks), so every round of repair
# does the same work.
PY_APP_ID = "benchapp02"
ENV_APP_ID = "benchapp03"
TABLE = "costream-bench"
REGION = "us-east-1"
PUSH_DOMAIN = "push.example.com"
CALLBACK_HOST = "bench123.execute-api.us-east-1.amazonaws.com"
# Local, throwaway values: the secret lives only in this run's moto.
SECRET = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "bench-key-id",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "bench-key-secret",
    "COSTREAM_PUSH_AUTH_KEY": "bench-push-key",
    "COSTREAM_PLAY_AUTH_KEY": "bench-play-key",
    "COSTREAM_CDN_NOTIFY_AUTH_KEY": "bench-cdn-key",
    "COSTREAM_ARTC_CALLBACK_SECRET": "bench-artc-secret",
    "COSTREAM_NOTIFY_SECRET": "bench-backend-secret",
    "COSTREAM_ARTC_APP_KEY": "bench-artc-app-key",
}

RUST_FUNCTIONS = [
    "stream-published",
    "stream-unpublished",
    "cdn-ingest",
    "room-status",
    "room-host",
    "room-settings",
    "repair",
]
PY_TWIN = "stream-published (Python)"
# Same binaries/handler with every secret in plain environment variables instead of Secrets
# Manager: the init difference is the cost of the GetSecretValue call at cold start (issue 14.6).
NO_SM_RUST = "stream-published, no Secrets Manager"
NO_SM_PY = "stream-published (Python), no Secrets Manager"


def fixture(*parts):
    with open(os.path.join(FIXTURES, *parts)) as f:
        return json.load(f)


# --- events ------------------------------------------------------------------------------------------
def artc_event(channel: str, tag_events: list[tuple[str, str, int]], msg_id: str,
               app_id: str = APP_ID) -> dict:
    """An EventBridge event whose detail is an ARTC callback (as the HTTP API puts it)."""
    ev = fixture("eventbridge", "01_host_publish.json")
    now = int(time.time())
    ev["id"] = str(uuid.uuid4())
    ev["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    contents = []
    for user, tag, ts in tag_events:
        contents.append(
            {
                "Event": "UserEvent",
                "UserEvent": {
                    "UserId": user,
                    "EventTag": tag,
                    "SessionId": f"sess-{user}-1",
                    "Timestamp": ts,
                    "Role": 1,
                    "TerminalType": 1,
                    **({"Reason": 1} if tag in ("Join", "Leave") else {}),
                },
            }
        )
    ev["detail"] = {
        "MsgId": msg_id,
        "MsgTimestamp": now,
        "SubscribeID": "sub-bench",
        "AppId": app_id,
        "ChannelID": channel,
        "Contents": contents,
    }
    return ev


def publish_event(channel: str, app_id: str = APP_ID) -> dict:
    now = int(time.time())
    return artc_event(
        channel, [("host_u1", "Join", now - 5), ("host_u1", "Publish", now - 4)], f"pub-{channel}",
        app_id,
    )


def leave_event(channel: str) -> dict:
    return artc_event(channel, [("host_u1", "Leave", int(time.time()) - 1)], f"leave-{channel}")


def http_event(method: str, path: str, route: str, channel: str | None, headers=None,
               query=None, body: str | None = None) -> dict:
    """An API Gateway HTTP API (payload 2.0) event."""
    ev = fixture("apigw", "room_status.json")
    ev["routeKey"] = route
    ev["rawPath"] = path
    ev["headers"] = {"host": CALLBACK_HOST, **(headers or {})}
    ev["pathParameters"] = {"channelId": channel} if channel else {}
    if query:
        ev["queryStringParameters"] = query
        ev["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    if body is not None:
        ev["body"] = body
    rc = ev["requestContext"]
    rc["domainName"] = CALLBACK_HOST
    rc["http"]["method"] = method
    rc["http"]["path"] = path
    rc["routeKey"] = route
    rc["requestId"] = str(uuid.uuid4())
    rc["timeEpoch"] = int(time.time() * 1000)
    return ev


def backend_event(channel: str, what: str, body: dict) -> dict:
    """PUT /rooms/{id}/{what}, signed as the app's backend signs it."""
    path = f"/rooms/{channel}/{what}"
    text = json.dumps(body, separators=(",", ":"))
    ts = str(int(time.time()))
    mac = hmac.new(
        SECRET["COSTREAM_NOTIFY_SECRET"].encode(), f"{ts}.PUT {path}.{text}".encode(),
        hashlib.sha256,
    ).hexdigest()
    return http_event(
        "PUT", path, f"PUT /rooms/{{channelId}}/{what}", channel,
        headers={"x-costream-timestamp": ts, "x-costream-signature": f"sha256={mac}",
                 "content-type": "application/json"},
        body=text,
    )


def cdn_event(channel: str) -> dict:
    ts = str(int(time.time()))
    sig = hashlib.md5(f"{CALLBACK_HOST}|{ts}|{SECRET['COSTREAM_CDN_NOTIFY_AUTH_KEY']}".encode())
    return http_event(
        "GET", "/cdn/ingest", "GET /cdn/ingest", None,
        headers={"ali-live-timestamp": ts, "ali-live-signature": sig.hexdigest(),
                 "user-agent": "AliyunCDN"},
        query={"action": "publish", "app": PUSH_DOMAIN, "appname": "live",
               "id": f"{channel}_main", "ip": "42.120.0.1", "node": "cdnvideocenter01.cm3",
               "time": str(int(time.time()) - 1)},
    )


def schedule_event() -> dict:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/costream-repair"], "detail": {},
    }


# --- environment -------------------------------------------------------------------------------------
def lambda_env(moto: str, live: str, function: str, secret_arn: str | None,
               app_id: str = APP_ID) -> dict:
    """What Lambda and template.yaml give a function, pointed at the local fakes. A clean
    environment (nothing inherited but PATH), as on Lambda."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        # Lambda's reserved variables.
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]bench",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "AWS_EXECUTION_ENV": "AWS_Lambda_bench",
        # Local fakes; no profile files.
        "AWS_ENDPOINT_URL": moto,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "ALIBABA_CLOUD_LIVE_ENDPOINT": live,
        # template.yaml's Globals.
        "COSTREAM_TABLE": TABLE,
        "COSTREAM_APP_ID": app_id,
        "COSTREAM_PUSH_DOMAIN": PUSH_DOMAIN,
        "COSTREAM_PLAY_DOMAIN": "pull.example.com",
        "COSTREAM_LIVE_APP_NAME": "live",
        "COSTREAM_CALLBACK_HOST": CALLBACK_HOST,
        "COSTREAM_MAX_STARTS_PER_MINUTE": "120",
        "COSTREAM_MAX_IDLE_TIME": "120",
        "COSTREAM_METRICS_NAMESPACE": "costream/bench",
    }
    if secret_arn:
        env["COSTREAM_SECRET_ARN"] = secret_arn
    else:
        env.update(SECRET)
    return env


def template_secrets(template_path: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """From template.yaml: each Secrets Manager secret's keys, and each function's (by its
    binary) COSTREAM_SECRET_ARN as a list of secret resource names, the Globals' value if it sets
    none. CloudFormation's short tags are read as plain data."""

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {suffix: value}

    Loader.add_multi_constructor("!", tag)
    with open(template_path) as f:
        t = yaml.load(f, Loader=Loader)

    def refs(value) -> list[str]:
        if isinstance(value, dict) and "Ref" in value:
            return [value["Ref"]]
        if isinstance(value, dict) and "Join" in value:
            return [r for part in value["Join"][1] for r in refs(part)]
        return []

    resources = t.get("Resources", {})
    secrets = {}
    for name, r in resources.items():
        if r.get("Type") == "AWS::SecretsManager::Secret":
            text = r.get("Properties", {}).get("SecretString", "")
            text = text.get("Sub", text) if isinstance(text, dict) else text
            secrets[name] = re.findall(r'"([A-Z][A-Z0-9_]*)"\s*:', str(text))
    glob = t.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    functions = {}
    for r in resources.values():
        binary = (r.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
        if r.get("Type") == "AWS::Serverless::Function" and binary:
            env = (r.get("Properties", {}).get("Environment") or {}).get("Variables") or {}
            functions[binary] = refs(env.get("COSTREAM_SECRET_ARN",
                                             glob.get("COSTREAM_SECRET_ARN")))
    return secrets, functions


def setup_aws(moto: str, secret_keys: dict[str, list[str]]) -> dict[str, str]:
    """The table (the key schema and indexes of DynamoStore::create_table) and the secrets as
    template.yaml lays them out (filled from SECRET); returns each secret's ARN by name."""
    kw = dict(endpoint_url=moto, region_name=REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing")
    ddb = boto3.client("dynamodb", **kw)
    gsi = lambda name, range_key, projection: {  # noqa: E731
        "IndexName": name,
        "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"},
                      {"AttributeName": range_key, "KeyType": "RANGE"}],
        "Projection": projection,
    }
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in
                              [("pk", "S"), ("shard", "S"), ("due_at", "N"), ("task", "S"),
                               ("hooks_due", "N")]],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            gsi("due", "due_at", {"ProjectionType": "INCLUDE",
                                  "NonKeyAttributes": ["failing_since"]}),
            gsi("tasks", "task", {"ProjectionType": "KEYS_ONLY"}),
            gsi("hooks", "hooks_due", {"ProjectionType": "KEYS_ONLY"}),
        ],
    )
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
        "AttributeName": "expires_at", "Enabled": True})
    sm = boto3.client("secretsmanager", **kw)
    arns = {}
    for name, keys in secret_keys.items():
        value = {k: SECRET.get(k, f"bench-{k.lower()}") for k in keys}
        arns[name] = sm.create_secret(Name=f"costream-bench-{name}",
                                      SecretString=json.dumps(value))["ARN"]
    return arns


def secrets_manager_latency(moto: str, arn: str, n: int) -> dict:
    """GetSecretValue against moto, timed from this process: the first call of a new client
    (new connection) and a warm call, n times each; client construction timed separately."""
    kw = dict(endpoint_url=moto, region_name=REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing")
    new_client, first, warm = [], [], []
    session = boto3.session.Session()
    session.client("secretsmanager", **kw)  # loads the service model once
    for _ in range(n):
        t0 = time.perf_counter()
        c = session.client("secretsmanager", **kw)
        t1 = time.perf_counter()
        c.get_secret_value(SecretId=arn)
        t2 = time.perf_counter()
        c.get_secret_value(SecretId=arn)
        t3 = time.perf_counter()
        new_client.append((t1 - t0) * 1e3)
        first.append((t2 - t1) * 1e3)
        warm.append((t3 - t2) * 1e3)
    return {"boto3 client construction": statistics.median(new_client),
            "first call (new connection)": statistics.median(first),
            "warm call": statistics.median(warm)}


# --- counting requests -------------------------------------------------------------------------------
class Counters:
    def __init__(self, moto_log: str | None, live: str):
        self.moto_log, self.live = moto_log, live

    def snapshot(self) -> tuple[int | None, int | None]:
        aws = None
        if self.moto_log:
            with open(self.moto_log, errors="replace") as f:
                aws = sum(1 for line in f if '"POST / HTTP' in line)
        try:
            with urllib.request.urlopen(self.live.rstrip("/") + "/_sim/calls", timeout=5) as r:
                live = len(json.load(r))
        except OSError:
            live = None
        return aws, live


# --- the run -----------------------------------------------------------------------------------------
def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moto", required=True, help="moto server URL")
    p.add_argument("--moto-log", help="moto's log (its request lines are counted)")
    p.add_argument("--live", required=True, help="simulated Live API URL")
    p.add_argument("--bin-dir", required=True, help="directory of the release binaries")
    p.add_argument("--python", required=True, help="the venv's python (awslambdaric etc.)")
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--logs", required=True, help="directory for the processes' output")
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--template", default=os.path.join(ROOT, "template.yaml"),
                   help="template.yaml whose secrets layout (secrets, COSTREAM_SECRET_ARN per "
                        "function) the run reproduces")
    args = p.parse_args()
    # SIGTERM (the script's cleanup) unwinds like Ctrl-C: the running function is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.logs, exist_ok=True)

    secret_keys, function_secrets = template_secrets(args.template)
    arns = setup_aws(args.moto, secret_keys)
    missing = [f for f in RUST_FUNCTIONS if not function_secrets.get(f)]
    if missing:
        sys.exit(f"{args.template}: no COSTREAM_SECRET_ARN for {', '.join(missing)}")

    def arn(function):  # the function's COSTREAM_SECRET_ARN, as deployed
        return ",".join(arns[s] for s in function_secrets[function])

    print("  secrets (COSTREAM_SECRET_ARN) per function, from template.yaml: " + "; ".join(
        f"{f} {'+'.join(function_secrets[f])}" for f in RUST_FUNCTIONS), file=sys.stderr)
    sm_latency = secrets_manager_latency(args.moto, arns[function_secrets["stream-published"][0]], 20)
    api = RuntimeApi()
    counters = Counters(args.moto_log, args.live)
    py_dir = os.path.join(HERE, "python")
    py_argv = [args.python, "-m", "awslambdaric", "handler.handler"]

    def rust(name):
        return [os.path.join(args.bin_dir, name)]

    def py_env(env):
        env = dict(env)
        env.update({"LAMBDA_TASK_ROOT": py_dir, "_HANDLER": "handler.handler",
                    "PYTHONPATH": py_dir})
        return env

    results: dict[str, list[dict]] = {}
    order: list[str] = []
    tag = uuid.uuid4().hex[:6]
    try:
        for rnd in range(args.runs + 1):
            room = f"cs-{tag}-r{rnd}"  # the Rust functions' room this round
            plan = [
                ("stream-published", "Rust", rust("stream-published"), None,
                 lambda_env(args.moto, args.live, "stream-published", arn("stream-published")),
                 publish_event(room)),
                (PY_TWIN, "Python", py_argv, py_dir,
                 py_env(lambda_env(args.moto, args.live, "stream-published-py",
                                  arn("stream-published"), PY_APP_ID)),
                 publish_event(f"{room}-py", PY_APP_ID)),
                (NO_SM_RUST, "Rust", rust("stream-published"), None,
                 lambda_env(args.moto, args.live, "stream-published", None, ENV_APP_ID),
                 publish_event(f"{room}-env", ENV_APP_ID)),
                (NO_SM_PY, "Python", py_argv, py_dir,
                 py_env(lambda_env(args.moto, args.live, "stream-published-py", None, PY_APP_ID)),
                 publish_event(f"{room}-pyenv", PY_APP_ID)),
                ("room-status", "Rust", rust("room-status"), None,
                 lambda_env(args.moto, args.live, "room-status", arn("room-status")),
                 http_event("GET", f"/rooms/{room}", "GET /rooms/{channelId}", room)),
                ("room-host", "Rust", rust("room-host"), None,
                 lambda_env(args.moto, args.live, "room-host", arn("room-host")),
                 backend_event(room, "host", {"user_id": "host_u1"})),
                ("room-settings", "Rust", rust("room-settings"), None,
                 lambda_env(args.moto, args.live, "room-settings", arn("room-settings")),
                 backend_event(room, "settings", {"layout": "split", "max_panes": 4})),
                ("cdn-ingest", "Rust", rust("cdn-ingest"), None,
                 lambda_env(args.moto, args.live, "cdn-ingest", arn("cdn-ingest")), cdn_event(room)),
                ("stream-unpublished", "Rust", rust("stream-unpublished"), None,
                 lambda_env(args.moto, args.live, "stream-unpublished", arn("stream-unpublished")), leave_event(room)),
                ("repair", "Rust", rust("repair"), None,
                 lambda_env(args.moto, args.live, "repair", arn("repair")), schedule_event()),
            ]
            for name, lang, argv, cwd, env, event in plan:
                before = counters.snapshot()
                log = os.path.join(args.logs, f"{name.replace(' ', '_').replace(',', '')}-{rnd}.log")
                r = api.cold_start(argv, env, event, env["AWS_LAMBDA_FUNCTION_NAME"], log, cwd)
                time.sleep(0.05)  # moto logs a request just after answering it
                after = counters.snapshot()
                r["aws_requests"] = None if before[0] is None else after[0] - before[0]
                r["live_calls"] = None if before[1] is None else after[1] - before[1]
                r["lang"] = lang
                r["breakdown"] = init_breakdown(log)
                r["round"] = rnd
                ok, summary = judge(r)
                if name in (PY_TWIN, NO_SM_RUST, NO_SM_PY, "stream-published") and \
                        r["live_calls"] not in (None, 1):
                    ok, summary = False, f"{r['live_calls']} Live API calls, not 1: {summary}"
                r["ok"] = ok
                if rnd == 0 or not ok:
                    print(f"  round {rnd} {name:<46} {'ok ' if ok else 'BAD'} {summary}",
                          file=sys.stderr)
                if rnd == 0:
                    continue  # warm-up
                if name not in results:
                    order.append(name)
                results.setdefault(name, []).append(r)
            if rnd:
                print(f"  round {rnd}/{args.runs} done", file=sys.stderr)
    finally:
        api.close()

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "secrets_manager_ms": sm_latency}, f, indent=1)
    report(order, results, sm_latency, args.runs)
    if not all(r["ok"] for rs in results.values() for r in rs):
        sys.exit("some invocations did not succeed; see the logs")


def init_breakdown(log_path: str) -> dict | None:
    """The Python handler's own timing of its module init (one JSON line in its output)."""
    with open(log_path, errors="replace") as f:
        for line in f:
            if line.startswith('{"bench_init_ms"'):
                return json.loads(line)["bench_init_ms"]
    return None


def judge(r: dict) -> tuple[bool, str]:
    """Did the invocation do its job? (a response, and a 2xx for HTTP API answers)"""
    if r["outcome"] != "response":
        return False, f"{r['outcome']}: {r['body'][:300]}"
    try:
        body = json.loads(r["body"])
    except ValueError:
        return False, r["body"][:300]
    if isinstance(body, dict) and "statusCode" in body:
        inner = body.get("body") or ""
        return 200 <= int(body["statusCode"]) < 300, f"{body['statusCode']} {inner[:160]}"
    return True, json.dumps(body)[:200]


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def report(order, results, sm_latency, runs):
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"\nMachine: {cpu}, {os.cpu_count()} CPUs, load average {load[0]:.2f} (1 min) at the end")
    print(f"\nCold start, median of {runs} cold starts each (init = spawn -> first /next; first "
          "invoke = event handed out -> response posted; RSS = VmHWM)\n")
    head = (f"| {'function':<46} | {'runtime':<7} | {'init ms':>8} | {'1st invoke ms':>13} | "
            f"{'init+invoke ms':>14} | {'peak RSS MiB':>12} | {'AWS req':>7} | {'Live calls':>10} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name in order:
        rs = results[name]
        init, inv = med(rs, "init_ms"), med(rs, "invoke_ms")
        tot = statistics.median([r["init_ms"] + r["invoke_ms"] for r in rs])
        rss = med(rs, "rss_kib")
        print(f"| {name:<46} | {rs[0]['lang']:<7} | {fmt(init, '8.1f')} | {fmt(inv, '13.1f')} | "
              f"{tot:14.1f} | {fmt(rss and rss / 1024, '12.1f')} | "
              f"{fmt(med(rs, 'aws_requests'), '7.0f')} | {fmt(med(rs, 'live_calls'), '10.0f')} |")

    def ratio_row(label, rust, py):
        a, b = results[rust], results[py]
        tot = lambda rs: statistics.median([r["init_ms"] + r["invoke_ms"] for r in rs])  # noqa
        print(f"| {label:<46} | {'R/Py':<7} | {med(a, 'init_ms') / med(b, 'init_ms'):8.3f} | "
              f"{med(a, 'invoke_ms') / med(b, 'invoke_ms'):13.3f} | {tot(a) / tot(b):14.3f} | "
              f"{med(a, 'rss_kib') / med(b, 'rss_kib'):12.3f} | {'':>7} | {'':>10} |")

    ratio_row("ratio Rust/Python, stream-published", "stream-published", PY_TWIN)
    ratio_row("ratio Rust/Python, no Secrets Manager", NO_SM_RUST, NO_SM_PY)

    def q(rs, key, i):
        vals = sorted(r[key] for r in rs)
        return statistics.quantiles(vals, n=4)[i] if len(vals) > 1 else vals[0]

    def spread(rs, key):
        lo, hi = min(r[key] for r in rs), max(r[key] for r in rs)
        return f"{q(rs, key, 0):.1f}-{q(rs, key, 2):.1f} ({lo:.1f}-{hi:.1f})"

    print("\nSpread in ms, p25-p75 (min-max):")
    for name in order:
        rs = results[name]
        print(f"  {name:<46} init {spread(rs, 'init_ms'):<26} "
              f"1st invoke {spread(rs, 'invoke_ms')}")

    print("\nSecrets Manager at init (GetSecretValue against moto):")
    for rust, py, label in (("stream-published", NO_SM_RUST, "Rust"),
                            (PY_TWIN, NO_SM_PY, "Python")):
        a, b = results[rust], results[py]
        d = med(a, "init_ms") - med(b, "init_ms")
        d25 = q(a, "init_ms", 0) - q(b, "init_ms", 0)
        print(f"  {label:<6} init with the secrets from Secrets Manager minus init with them in "
              f"the environment: {d:+.1f} ms (medians), {d25:+.1f} ms (p25s)")
    py = [r["breakdown"] for r in results[PY_TWIN] if r.get("breakdown")]
    if py:
        parts = {k: statistics.median([b[k] for b in py]) for k in py[0]}
        print(f"  Python handler's own timing of its module init (medians): imports "
              f"{parts['imports']:.1f} ms, secretsmanager client + GetSecretValue "
              f"{parts['secret']:.1f} ms, DynamoDB + Live clients {parts['clients']:.1f} ms; the "
              f"rest of init ({med(results[PY_TWIN], 'init_ms') - sum(parts.values()):.1f} ms) is "
              "the interpreter and awslambdaric")
    print("  the harness's own boto3 against the same moto: " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in sm_latency.items()))


if __name__ == "__main__":
    main()
