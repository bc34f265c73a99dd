"""A minimal local Lambda Runtime API (2018-06-01) for measuring cold starts.

Implements what a runtime client calls:

  GET  /2018-06-01/runtime/invocation/next                 -> the next event (blocks)
  POST /2018-06-01/runtime/invocation/{request_id}/response
  POST /2018-06-01/runtime/invocation/{request_id}/error
  POST /2018-06-01/runtime/init/error

`cold_start()` spawns one fresh process with AWS_LAMBDA_RUNTIME_API pointing here, hands it one
event and measures, on one monotonic clock (time.perf_counter_ns):

  init_ms   : process spawn (just before fork/exec) -> its first GET .../invocation/next
              (Lambda's Init phase: runtime start, imports, configuration, clients)
  invoke_ms : event handed out (response to that /next written) -> .../response or .../error
              posted (Lambda's first Invoke, "cold" inside the process)
  rss_kib   : VmHWM (peak resident set) from /proc/<pid>/status, read once the process is
              parked on its second /next, just before it is killed

Standard library only; one invocation per process; one process at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class _Run:
    """The state of one cold start, shared between the server threads and the driver."""

    def __init__(self, event: bytes, function_name: str):
        self.event = event
        self.function_name = function_name
        self.request_id = str(uuid.uuid4())
        self.first_next_ns: int | None = None
        self.handed_ns: int | None = None
        self.done_ns: int | None = None
        self.outcome: str | None = None  # "response" | "error" | "init_error"
        self.body: bytes = b""
        self.handed_out = False
        self.done = threading.Event()
        self.parked = threading.Event()  # the process asked for a second event
        self.release = threading.Event()  # lets parked /next requests return (after the kill)


class RuntimeApi:
    """The Runtime API server on 127.0.0.1 (a free port unless given)."""

    def __init__(self, port: int = 0):
        api = self
        self.run: _Run | None = None
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoint

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_GET(self):
                now = time.perf_counter_ns()
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404, b'{"errorMessage":"not found"}')
                run = api.run
                if run is None:
                    return self._reply(500, b'{"errorMessage":"no run"}')
                with api.lock:
                    first = not run.handed_out
                    run.handed_out = True
                    if first:
                        run.first_next_ns = now
                if not first:
                    # One event per process: park it until the driver has killed it.
                    run.parked.set()
                    run.release.wait(30)
                    try:
                        self._reply(410, b'{"errorMessage":"benchmark over"}')
                    except OSError:
                        pass
                    return
                deadline_ms = int(time.time() * 1000) + 30_000
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": run.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": (
                        f"arn:aws:lambda:us-east-1:123456789012:function:{run.function_name}"
                    ),
                    "Lambda-Runtime-Trace-Id": (
                        "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0"
                    ),
                }
                # Stamped before the write: the answer may come back before this thread runs again.
                run.handed_ns = time.perf_counter_ns()
                self._reply(200, run.event, headers)

            def do_POST(self):
                body = self._body()
                now = time.perf_counter_ns()
                run = api.run
                path = self.path
                if run is not None and path == PREFIX + "/init/error":
                    run.outcome, run.body, run.done_ns = "init_error", body, now
                    self._reply(202, b'{"status":"OK"}')
                    run.done.set()
                    return
                if run is not None and path.startswith(PREFIX + "/invocation/"):
                    parts = path[len(PREFIX + "/invocation/") :].split("/")
                    if len(parts) == 2 and parts[0] == run.request_id and parts[1] in (
                        "response",
                        "error",
                    ):
                        run.outcome, run.body, run.done_ns = parts[1], body, now
                        self._reply(202, b'{"status":"OK"}')
                        run.done.set()
                        return
                self._reply(404, b'{"errorMessage":"unknown request id or path"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def cold_start(
        self,
        argv: list[str],
        env: dict[str, str],
        event: dict,
        function_name: str,
        log_path: str,
        cwd: str | None = None,
        timeout_s: float = 60.0,
    ) -> dict:
        """One cold start of `argv` with one invocation of `event`; see the module doc."""
        run = _Run(json.dumps(event).encode(), function_name)
        self.run = run
        env = dict(env)
        env["AWS_LAMBDA_RUNTIME_API"] = self.address
        env.setdefault("AWS_LAMBDA_FUNCTION_NAME", function_name)
        with open(log_path, "wb") as log:
            t0 = time.perf_counter_ns()
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + timeout_s
                while not run.done.is_set():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{function_name} exited with {proc.returncode} before answering "
                            f"(log: {log_path})"
                        )
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{function_name}: no answer in {timeout_s} s")
                    run.done.wait(0.005)
                if run.outcome == "init_error":
                    raise RuntimeError(
                        f"{function_name}: init error {run.body[:500]!r} (log: {log_path})"
                    )
                # Wait for the process to come back for its next event (its work is done then),
                # then read its peak RSS while it is still alive.
                run.parked.wait(5)
                rss_kib = _vm_hwm_kib(proc.pid)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                run.release.set()
                self.run = None
        return {
            "init_ms": (run.first_next_ns - t0) / 1e6,
            "invoke_ms": (run.done_ns - run.handed_ns) / 1e6,
            "rss_kib": rss_kib,
            "outcome": run.outcome,
            "body": run.body.decode("utf-8", "replace"),
        }


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


if __name__ == "__main__":
    # Manual use: python emulator.py EVENT.json -- COMMAND [ARGS...]
    import sys

    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: emulator.py EVENT.json -- COMMAND [ARGS...]")
    api = RuntimeApi()
    with open(sys.argv[1]) as f:
        ev = json.load(f)
    result = api.cold_start(sys.argv[3:], dict(os.environ), ev, os.path.basename(sys.argv[3]),
                            "/dev/stderr")
    print(json.dumps(result, indent=2))
    api.close()
