#!/usr/bin/env python3
"""A long-lived handler speaking the outage protocol (version 1) by hand,
standard library only: the fixture of tests/tests/std_long_lived.rs for the
faults a well-behaved helper never commits.

Start modes (argv[1], default "normal"): normal; exit-at-start (exits 7
before it is ready); once (ready at the first start only); never-ready (sleeps); slow-ready
(ready after 3 s); ignore-term (ignores SIGTERM, so
only SIGKILL ends it). What a task does comes from its payload: {"crash":
true} exits 3 mid-task after a line on stderr; {"fork_crash": true} the
same, with a forked child holding stdout open; {"exit_after_reply": true}
completes, then exits while idle; {"sleep": S}; {"garbage":
true} replies with a line that is not JSON; {"wrong_id": true} replies to
another request; {"huge": N} replies with a line of N bytes; {"fail": "x"}
fails with that text; {"print": "x"} prints x to stdout (the helper's rule:
stdout is moved to stderr, so this must not break the stream).
Each task is appended to $OUTAGE_TEST_OUT as one JSON line: task id, pid,
token, the payload as received.
"""
import json
import os
import signal
import sys
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "normal"
proto = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr


def send(msg):
    proto.write(json.dumps(msg) + "\n")
    proto.flush()


if mode == "exit-at-start":
    print("cannot load the model", file=sys.stderr, flush=True)
    sys.exit(7)
if mode == "once":
    # Ready the first time only (a handler whose environment broke later).
    flag = os.environ["OUTAGE_TEST_ONCE"]
    if os.path.exists(flag):
        print("the virtualenv is gone", file=sys.stderr, flush=True)
        sys.exit(7)
    open(flag, "w").close()
if mode == "never-ready":
    time.sleep(3600)
if mode == "slow-ready":
    # Ready after 3 s (a handler importing a model), for signals that
    # come while it starts.
    time.sleep(3)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

send({"jsonrpc": "2.0", "method": "ready", "params": {"protocol": 1}})
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") != "task":
        continue
    params, rid = msg["params"], msg["id"]
    payload = params["payload"]
    out = os.environ.get("OUTAGE_TEST_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"task": params["id"], "pid": os.getpid(),
                                "token": params["env"].get("ZNDRAW_TOKEN"),
                                "payload": payload}) + "\n")
    if not isinstance(payload, dict):
        payload = {}
    if "print" in payload:
        print(payload["print"], flush=True)
    if "sleep" in payload:
        time.sleep(payload["sleep"])
    if payload.get("fork_crash"):
        # A child that keeps stdout open outlives the handler's crash.
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        print("crashing, a child left behind", file=sys.stderr, flush=True)
        os._exit(3)
    if payload.get("exit_after_reply"):
        send({"jsonrpc": "2.0", "id": rid, "result": {"status": "completed"}})
        sys.exit(0)
    if payload.get("crash"):
        print("about to crash: segfault in the model", file=sys.stderr, flush=True)
        os._exit(3)
    if payload.get("garbage"):
        proto.write("this is not json\n")
        proto.flush()
        continue
    if payload.get("wrong_id"):
        send({"jsonrpc": "2.0", "id": rid + 100, "result": {"status": "completed"}})
        continue
    if "huge" in payload:
        proto.write('{"x":"' + "a" * payload["huge"] + '"}\n')
        proto.flush()
        continue
    if "fail" in payload:
        send({"jsonrpc": "2.0", "id": rid, "result": {"status": "failed", "error": payload["fail"]}})
        continue
    send({"jsonrpc": "2.0", "id": rid, "result": {"status": "completed"}})
