#!/usr/bin/env python3
"""A level-1 handler (``outage_handler.serve``) that talks back to the
server at the end of each task, as a ZnDraw modifier writing to its room
would: it sleeps ``payload["sleep"]`` seconds, then asks the server for its
own task with ``ctx.token`` (which token notifications keep current) and
appends one JSON line to ``$OUTAGE_TEST_OUT``: task id, the HTTP status of
that request, and whether the token it used differs from the one the task
started with. The fixture of the JWT test in tests/tests/std_long_lived.rs.
"""
import json
import os
import time
import urllib.error
import urllib.request

import outage_handler


def talk_back(payload, ctx):
    first = ctx.token
    time.sleep(float(payload.get("sleep", 0)))
    req = urllib.request.Request(
        f"{ctx.url}/v1/joblib/tasks/{ctx.task_id}",
        headers={"Authorization": f"Bearer {ctx.token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    with open(os.environ["OUTAGE_TEST_OUT"], "a") as f:
        f.write(json.dumps({"task": ctx.task_id, "status": status,
                            "renewed_mid_task": ctx.token != first}) + "\n")
    if status != 200:
        raise RuntimeError(f"talking back to the server: HTTP {status}")


outage_handler.serve(talk_back)
