"""ZnDraw extensions that misbehave on request, for the real-server tests
of ``outage-worker --serve`` (tests/tests/std_long_lived.rs): unchanged
``zndraw_joblib.client.Extension`` subclasses, served by
``python3 -m outage_handler chaos_extension:Chaos`` (or ``:TalkBack``).

Each task appends one JSON line to ``$OUTAGE_TEST_OUT`` (task id, pid, …),
so a test can tell that it ran, and ran once.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from zndraw_joblib.client import Category, Extension


def record(line: dict[str, Any]) -> None:
    fd = os.open(os.environ["OUTAGE_TEST_OUT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


class Chaos(Extension):
    """Sleeps ``sleep`` seconds; with ``crash`` the process dies mid-task."""

    category: ClassVar[Category] = Category.MODIFIER
    n: int = 0
    sleep: float = 0.0
    crash: bool = False

    def run(self, vis: Any, **kwargs: Any) -> None:
        record({"task": os.environ.get("ZNDRAW_TASK_ID"), "pid": os.getpid(), "n": self.n})
        time.sleep(self.sleep)
        if self.crash:
            print("Chaos: the model segfaulted", file=sys.stderr, flush=True)
            os._exit(3)


class TalkBack(Extension):
    """Runs ``sleep`` seconds, then talks back to the server with the token
    it holds *then* (``ZNDRAW_TOKEN``, which the helper keeps current as
    the worker renews it), as a modifier writing to its room would."""

    category: ClassVar[Category] = Category.MODIFIER
    sleep: float = 0.0

    def run(self, vis: Any, **kwargs: Any) -> None:
        first = os.environ.get("ZNDRAW_TOKEN")
        time.sleep(self.sleep)
        token = os.environ.get("ZNDRAW_TOKEN")
        task = os.environ.get("ZNDRAW_TASK_ID")
        req = urllib.request.Request(
            f"{os.environ['ZNDRAW_URL']}/v1/joblib/tasks/{task}",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        record({"task": task, "status": status, "renewed_mid_task": token != first})
        if status != 200:
            raise RuntimeError(f"talking back to the server: HTTP {status}")
