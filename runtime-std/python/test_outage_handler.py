"""Tests of outage_handler.py, driving it as a subprocess (the worker's side).

    /work/py20/bin/python -m unittest discover -s runtime-std/python -v
    python3 -m unittest discover -s runtime-std/python -v   # no pydantic: level 1 only

Level 2 tests need pydantic and zndraw_joblib (skipped without them); the
Shift test also needs ase and numpy (tests/python/requirements-extensions.txt).
Every wait has a timeout and every process started is killed at the end.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HELPER = HERE / "outage_handler.py"
EXTENSIONS = ROOT / "tests" / "python"
TIMEOUT = 20.0  # any single wait
JOB = "@global:modifiers:Shift"


def importable(*names: str) -> bool:
    try:
        for n in names:
            __import__(n)
    except ImportError:
        return False
    return True


HAVE_JOBLIB = importable("pydantic", "zndraw_joblib.client")
HAVE_ASE = HAVE_JOBLIB and importable("ase", "numpy")


class Handler:
    """A handler process and the worker's side of protocol 1."""

    def __init__(self, args: list[str], cwd: str, extra_env: dict[str, str] | None = None,
                 pythonpath: list[Path] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZNDRAW_", "OUTAGE_"))}
        env.update(
            OUTAGE_PROTOCOL="1",
            ZNDRAW_URL="http://127.0.0.1:9/",
            ZNDRAW_JOB=JOB,
            ZNDRAW_TOKEN="tok-start",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="0",
        )
        paths = [str(p) for p in (pythonpath if pythonpath is not None else [HERE])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.next_id = 0
        self.stdout_lines: queue.Queue = queue.Queue()
        self.raw_stdout: list[bytes] = []
        self.stderr_lines: queue.Queue = queue.Queue()
        self.stderr_all: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        for line in self.proc.stdout:
            self.raw_stdout.append(line)
            self.stdout_lines.put(line)
        self.stdout_lines.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace")
            self.stderr_all.append(text)
            self.stderr_lines.put(text)
        self.stderr_lines.put(None)

    def stderr(self) -> str:
        return "".join(self.stderr_all)

    def message(self, timeout: float = TIMEOUT) -> dict | None:
        """The next line on stdout, parsed (None at EOF)."""
        try:
            line = self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s; stderr:\n{self.stderr()}") from None
        if line is None:
            return None
        return json.loads(line)

    def ready(self) -> dict:
        msg = self.message()
        assert msg is not None, f"exited before ready; stderr:\n{self.stderr()}"
        assert msg.get("method") == "ready" and msg.get("jsonrpc") == "2.0", msg
        assert "id" not in msg, msg
        return msg["params"]

    def send(self, msg: dict | bytes) -> None:
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def task(self, payload, task_id: str = "t1", room: str = "room1", token: str = "tok-start") -> int:
        self.next_id += 1
        env = {
            "ZNDRAW_URL": "http://127.0.0.1:9/", "ZNDRAW_TOKEN": token, "ZNDRAW_ROOM": room,
            "ZNDRAW_TASK_ID": task_id, "ZNDRAW_JOB": JOB,
        }  # fmt: skip
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": "task",
                   "params": {"id": task_id, "job": JOB, "room": room, "payload": payload, "env": env}})
        return self.next_id

    def result(self, rid: int, timeout: float = TIMEOUT) -> dict:
        msg = self.message(timeout)
        assert msg is not None, f"exited instead of replying; stderr:\n{self.stderr()}"
        assert msg.get("jsonrpc") == "2.0" and msg.get("id") == rid, msg
        return msg["result"]

    def run(self, payload, **kw) -> dict:
        return self.result(self.task(payload, **kw))

    def token(self, token: str) -> None:
        self.send({"jsonrpc": "2.0", "method": "token", "params": {"token": token}})

    def stderr_until(self, text: str, timeout: float = TIMEOUT) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.stderr_lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if text in line:
                return line
        raise AssertionError(f"{text!r} not on stderr within {timeout} s:\n{self.stderr()}")

    def close(self, timeout: float = TIMEOUT) -> int:
        """EOF on stdin, then the exit status."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=TIMEOUT)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="outage-handler-test-")
        self.dir = Path(self.tmp.name)
        self.addCleanup(self.tmp.cleanup)

    def write(self, name: str, text: str) -> Path:
        p = self.dir / name
        p.write_text(textwrap.dedent(text))
        return p

    def start(self, args: list[str], **kw) -> Handler:
        h = Handler(args, cwd=str(self.dir), **kw)
        self.addCleanup(h.kill)
        return h

    def script(self, body: str, **kw) -> Handler:
        self.write("handler.py", body)
        return self.start([str(self.dir / "handler.py")], **kw)

    def assert_clean_stdout(self, h: Handler) -> None:
        """Nothing but JSON-RPC lines reached stdout."""
        for line in h.raw_stdout:
            msg = json.loads(line)
            self.assertEqual(msg.get("jsonrpc"), "2.0", line)


# ---------------------------------------------------------------- level 1

LEVEL1 = """\
import os, sys, time, json
import outage_handler
print("printed at import")

def fn(payload, ctx):
    print("in task", ctx.task_id)
    if payload.get("fail"):
        raise ValueError("bad dx:\\n" + payload["fail"])
    if payload.get("ctx"):
        sys.stderr.write("CTX " + json.dumps({"task_id": ctx.task_id, "job": ctx.job, "room": ctx.room,
            "url": ctx.url, "token": ctx.token, "env": ctx.env,
            "environ_room": os.environ.get("ZNDRAW_ROOM")}) + "\\n")
    if "blob" in payload:
        assert len(payload["blob"]) == payload["n"], len(payload["blob"])
    if payload.get("c_write"):
        os.write(1, b"raw write to fd 1\\n")
    if payload.get("wait_token"):
        sys.stderr.write("started " + ctx.token + "\\n")
        sys.stderr.flush()
        end = time.monotonic() + 10
        while ctx.token == payload["wait_token"] and time.monotonic() < end:
            time.sleep(0.01)
        sys.stderr.write(" ".join(["saw", ctx.token, ctx.env["ZNDRAW_TOKEN"], os.environ["ZNDRAW_TOKEN"]]) + "\\n")
    if payload.get("sleep"):
        sys.stderr.write("started sleeping\\n")
        sys.stderr.flush()
        time.sleep(payload["sleep"])
        sys.stderr.write("slept\\n")

SCHEMA = @SCHEMA@
outage_handler.serve(fn@ARGS@)
print("serve returned")
"""


def level1(schema: dict | None = None) -> str:
    if schema is None:
        return LEVEL1.replace("@SCHEMA@", "None").replace("@ARGS@", "")
    return LEVEL1.replace("@SCHEMA@", repr(schema)).replace("@ARGS@", ", schema=SCHEMA")


class Level1(Base):
    def test_ready_without_schema(self) -> None:
        h = self.script(level1())
        self.assertEqual(h.ready(), {"protocol": 1})
        self.assertEqual(h.close(), 0)

    def test_ready_with_schema(self) -> None:
        schema = {"type": "object", "properties": {"dx": {"type": "number", "default": 1.0}}}
        h = self.script(level1(schema))
        self.assertEqual(h.ready(), {"protocol": 1, "schema": schema})
        self.assertEqual(h.close(), 0)

    def test_completed_with_the_request_id(self) -> None:
        h = self.script(level1())
        h.ready()
        for i in range(3):
            rid = h.task({"i": i}, task_id=f"t{i}")
            self.assertEqual(h.result(rid), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        self.assertIn("serve returned", h.stderr())

    def test_failed_with_one_line_text(self) -> None:
        h = self.script(level1())
        h.ready()
        self.assertEqual(h.run({"fail": "x=3"}), {"status": "failed", "error": "ValueError: bad dx: x=3"})
        h.stderr_until("ValueError: bad dx")
        self.assertIn("Traceback (most recent call last)", h.stderr())
        # the handler goes on serving
        self.assertEqual(h.run({}), {"status": "completed"})
        self.assertEqual(h.close(), 0)

    def test_context(self) -> None:
        h = self.script(level1())
        h.ready()
        self.assertEqual(h.run({"ctx": True}, task_id="abc", room="roomX", token="tok-9")["status"], "completed")
        line = h.stderr_until("CTX ")
        ctx = json.loads(line.split("CTX ", 1)[1])
        self.assertEqual(ctx["task_id"], "abc")
        self.assertEqual(ctx["job"], JOB)
        self.assertEqual(ctx["room"], "roomX")
        self.assertEqual(ctx["url"], "http://127.0.0.1:9/")
        self.assertEqual(ctx["token"], "tok-9")
        self.assertEqual(ctx["env"]["ZNDRAW_TASK_ID"], "abc")
        self.assertEqual(ctx["environ_room"], "roomX")
        h.close()

    def test_print_goes_to_stderr_not_stdout(self) -> None:
        h = self.script(level1())
        h.ready()
        self.assertEqual(h.run({"c_write": True}), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        err = h.stderr()
        for text in ("printed at import", "in task t1", "raw write to fd 1", "serve returned"):
            self.assertIn(text, err)
        self.assert_clean_stdout(h)
        self.assertEqual(len(h.raw_stdout), 2)  # ready + one reply

    def test_print_before_serve_without_OUTAGE_PROTOCOL(self) -> None:
        """Without OUTAGE_PROTOCOL=1 the import leaves stdout alone; serve() takes it."""
        h = self.script(level1(), extra_env={"OUTAGE_PROTOCOL": ""})
        self.assertEqual(h.stdout_lines.get(timeout=TIMEOUT), b"printed at import\n")
        h.ready()
        self.assertEqual(h.run({"c_write": True}), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        self.assertIn("raw write to fd 1", h.stderr())
        self.assertEqual(len(h.raw_stdout), 3)

    def test_token_notification_mid_task(self) -> None:
        h = self.script(level1())
        h.ready()
        rid = h.task({"wait_token": "tok-1"}, token="tok-1")
        h.stderr_until("started tok-1")
        h.token("tok-2")
        self.assertEqual(h.result(rid), {"status": "completed"})
        h.stderr_until("saw tok-2 tok-2 tok-2")
        h.close()

    def test_token_before_a_task_is_not_undone_by_the_queue(self) -> None:
        h = self.script(level1())
        h.ready()
        h.token("tok-early")
        self.assertEqual(h.run({"ctx": True}, token="tok-early")["status"], "completed")
        self.assertIn('"token": "tok-early"', h.stderr_until("CTX "))
        h.close()

    def test_eof_finishes_the_running_task_then_exits_0(self) -> None:
        h = self.script(level1())
        h.ready()
        rid = h.task({"sleep": 0.5})
        h.stderr_until("started sleeping")
        t0 = time.monotonic()
        h.proc.stdin.close()
        self.assertEqual(h.result(rid), {"status": "completed"})
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 0)
        self.assertGreater(time.monotonic() - t0, 0.3)
        self.assertIn("slept", h.stderr())
        self.assertIsNone(h.message())

    def test_payload_of_5_mb(self) -> None:
        h = self.script(level1())
        h.ready()
        n = 5 * 1024 * 1024
        self.assertEqual(h.run({"blob": "x" * n, "n": n}), {"status": "completed"})
        self.assertEqual(h.close(), 0)

    def test_unknown_methods_and_bad_lines_are_ignored(self) -> None:
        h = self.script(level1())
        h.ready()
        h.send({"jsonrpc": "2.0", "method": "future_thing", "params": {"x": 1}})
        h.send(b"not json\n\n")
        h.send({"jsonrpc": "2.0", "method": "task", "params": {"payload": {}}})  # no id: a notification
        self.assertEqual(h.run({}, task_id="after"), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        self.assertEqual(len(h.raw_stdout), 2)

    def test_unknown_fields_are_ignored(self) -> None:
        h = self.script(level1())
        h.ready()
        h.next_id += 1
        h.send({"jsonrpc": "2.0", "id": h.next_id, "method": "task", "extra": 1,
                "params": {"id": "t", "job": JOB, "room": "r", "payload": {}, "env": {}, "new": [1]}})
        self.assertEqual(h.result(h.next_id), {"status": "completed"})
        h.close()

    def test_system_exit_in_a_task_replies_then_exits(self) -> None:
        h = self.script("""\
            import sys, outage_handler
            def fn(payload, ctx):
                sys.exit(3)
            outage_handler.serve(fn)
        """)
        h.ready()
        self.assertEqual(h.run({}), {"status": "failed", "error": "SystemExit: 3"})
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 3)


# ---------------------------------------------------------------- level 2

EXT = """\
import json, os, sys
from typing import ClassVar
from zndraw_joblib.client import Category, Extension

OUT = os.environ.get("TEST_OUT")

def log(rec):
    with open(OUT, "a") as f:
        f.write(json.dumps(rec) + "\\n")

class Model:
    pass

def load():
    log({"hook": os.getpid()})
    print("hook printed")  # must not break the protocol
    return {"model": Model(), "scale": 2}

def load_bad():
    return {"providers": 1}

def load_raises():
    raise RuntimeError("no GPU")

def make_vis(ctx):
    return {"vis_for": ctx.task_id, "token": ctx.token}

class Shift(Extension):
    category: ClassVar[Category] = Category.MODIFIER
    dx: float = 1.0
    label: str | None = None

    def run(self, vis, **kwargs):
        print("running", self.dx)
        if self.dx < 0:
            raise ArithmeticError("negative dx")
        rec = {"dx": self.dx, "kwargs": sorted(kwargs), "task": os.environ.get("ZNDRAW_TASK_ID")}
        if "model" in kwargs:
            rec["model_id"] = id(kwargs["model"])
        if "providers" in kwargs:
            rec["providers"] = kwargs["providers"]
        rec["vis"] = vis if isinstance(vis, (dict, type(None))) else repr(vis)
        log(rec)

class Abstract(Extension):
    category: ClassVar[Category] = Category.MODIFIER

not_a_class = 3
"""

FAKE_ZNDRAW = """\
import json, os
class ZnDraw:
    def __init__(self, url=None, room=None, token=None):
        self.url, self.room, self.token = url, room, token
        with open(os.environ["TEST_OUT"], "a") as f:
            f.write(json.dumps({"zndraw": [url, room, token]}) + "\\n")
    def disconnect(self):
        with open(os.environ["TEST_OUT"], "a") as f:
            f.write(json.dumps({"disconnect": self.room}) + "\\n")
    def __repr__(self):
        return "ZnDraw(%s)" % self.room
"""


@unittest.skipUnless(HAVE_JOBLIB, "needs pydantic and zndraw_joblib")
class Level2(Base):
    def setUp(self) -> None:
        super().setUp()
        self.write("ext.py", EXT)
        self.out = self.dir / "out.jsonl"
        self.env = {"TEST_OUT": str(self.out)}

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def serve(self, *args: str, module: bool = True, pythonpath: list[Path] | None = None) -> Handler:
        head = ["-m", "outage_handler"] if module else [str(HELPER)]
        return self.start([*head, *args], extra_env=self.env, pythonpath=pythonpath)

    def test_schema_equals_model_json_schema(self) -> None:
        sys.path.insert(0, str(self.dir))
        self.addCleanup(sys.path.remove, str(self.dir))
        import importlib

        ext = importlib.import_module("ext")
        self.addCleanup(sys.modules.pop, "ext", None)
        from zndraw_joblib.schemas import JobRegisterRequest

        h = self.serve("ext:Shift")
        params = h.ready()
        want = ext.Shift.model_json_schema()
        self.assertEqual(params["schema"], want)
        sent = JobRegisterRequest(category="modifiers", name="Shift", schema=want).model_dump(
            exclude_none=True, mode="json")
        self.assertEqual(params["schema"], sent["schema_"])  # the JobManager's body
        self.assertIn({"type": "null"}, params["schema"]["properties"]["label"]["anyOf"])
        self.assertEqual(params["protocol"], 1)
        self.assertEqual(h.close(), 0)

    def test_runs_the_extension(self) -> None:
        h = self.serve("ext:Shift")
        h.ready()
        self.assertEqual(h.run({"dx": 2.5}, task_id="a"), {"status": "completed"})
        self.assertEqual(h.run({}, task_id="b"), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        recs = self.records()
        self.assertEqual([(r["dx"], r["task"], r["vis"], r["kwargs"]) for r in recs],
                         [(2.5, "a", None, []), (1.0, "b", None, [])])
        self.assertIn("running 2.5", h.stderr())
        self.assert_clean_stdout(h)

    def test_validation_error_message(self) -> None:
        from pydantic import ValidationError

        sys.path.insert(0, str(self.dir))
        self.addCleanup(sys.path.remove, str(self.dir))
        import importlib

        ext = importlib.import_module("ext")
        self.addCleanup(sys.modules.pop, "ext", None)
        try:
            ext.Shift.model_validate({"dx": "far"})
        except ValidationError as e:
            want = str(e)
        h = self.serve("ext:Shift")
        h.ready()
        res = h.run({"dx": "far"})
        self.assertEqual(res, {"status": "failed", "error": want})
        self.assertIn("1 validation error for Shift", res["error"])
        self.assertIn("dx", res["error"])
        self.assertEqual(self.records(), [])
        self.assertEqual(h.run({"dx": 1}), {"status": "completed"})
        h.close()

    def test_exception_in_run(self) -> None:
        h = self.serve("ext:Shift")
        h.ready()
        self.assertEqual(h.run({"dx": -1}), {"status": "failed", "error": "ArithmeticError: negative dx"})
        h.close()

    def test_run_kwargs_hook_called_once_for_many_tasks(self) -> None:
        h = self.serve("ext:Shift", "--run-kwargs", "ext:load")
        h.ready()
        hooks = [r for r in self.records() if "hook" in r]
        self.assertEqual(len(hooks), 1)  # before ready
        for i in range(8):
            self.assertEqual(h.run({"dx": i}, task_id=f"t{i}"), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        recs = self.records()
        self.assertEqual(len([r for r in recs if "hook" in r]), 1)
        runs = [r for r in recs if "dx" in r]
        self.assertEqual(len(runs), 8)
        self.assertEqual({tuple(r["kwargs"]) for r in runs}, {("model", "scale")})
        self.assertEqual(len({r["model_id"] for r in runs}), 1)
        self.assertIn("hook printed", h.stderr())
        self.assert_clean_stdout(h)

    def test_run_kwargs_hook_that_raises_exits_1_before_ready(self) -> None:
        h = self.serve("ext:Shift", "--run-kwargs", "ext:load_raises")
        self.assertIsNone(h.message())
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 1)
        self.assertIn("RuntimeError: no GPU", h.stderr())

    def test_vis_factory(self) -> None:
        h = self.serve("ext:Shift", "--vis", "ext:make_vis")
        h.ready()
        self.assertEqual(h.run({}, task_id="v1", token="tok-v"), {"status": "completed"})
        h.close()
        self.assertEqual(self.records()[0]["vis"], {"vis_for": "v1", "token": "tok-v"})

    def test_with_zndraw_importable(self) -> None:
        """ZnDraw(url=, room=, token=) per task, run(vis, providers={}, **kw), disconnect."""
        (self.dir / "fake").mkdir()
        (self.dir / "fake" / "zndraw.py").write_text(FAKE_ZNDRAW)
        h = self.serve("ext:Shift", "--run-kwargs", "ext:load", pythonpath=[HERE, self.dir / "fake"])
        h.ready()
        self.assertEqual(h.run({"dx": 1}, task_id="z1", room="roomZ", token="tok-z"), {"status": "completed"})
        rid = h.task({"dx": -1}, task_id="z2", room="roomY", token="tok-y")
        self.assertEqual(h.result(rid)["error"], "ArithmeticError: negative dx")
        h.close()
        recs = [r for r in self.records() if "hook" not in r]
        self.assertEqual(recs[0], {"zndraw": ["http://127.0.0.1:9/", "roomZ", "tok-z"]})
        self.assertEqual(recs[1]["vis"], "ZnDraw(roomZ)")
        self.assertEqual(recs[1]["providers"], {})
        self.assertEqual(recs[1]["kwargs"], ["model", "providers", "scale"])
        self.assertEqual(recs[2], {"disconnect": "roomZ"})
        self.assertEqual(recs[3], {"zndraw": ["http://127.0.0.1:9/", "roomY", "tok-y"]})
        self.assertEqual(recs[4], {"disconnect": "roomY"})  # also after a failure

    def test_providers_in_run_kwargs_with_zndraw_is_refused(self) -> None:
        (self.dir / "fake").mkdir()
        (self.dir / "fake" / "zndraw.py").write_text(FAKE_ZNDRAW)
        h = self.serve("ext:Shift", "--run-kwargs", "ext:load_bad", pythonpath=[HERE, self.dir / "fake"])
        self.assertIsNone(h.message())
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 2)
        self.assertIn("'providers' is reserved", h.stderr())

    def test_as_a_script_path_with_the_cwd_on_sys_path(self) -> None:
        h = self.serve("ext:Shift", module=False, pythonpath=[])
        h.ready()
        self.assertEqual(h.run({"dx": 3}), {"status": "completed"})
        self.assertEqual(h.close(), 0)

    def test_bad_arguments_exit_2_before_ready(self) -> None:
        cases = {
            "nomodule_xyz:Shift": "no module named 'nomodule_xyz'",
            "ext:Nope": "has no attribute 'Nope'",
            "ext": "must be 'module:name'",
            "ext:Shift:x": "must be 'module:name'",
            ":Shift": "must be 'module:name'",
            "ext:not_a_class": "is not a zndraw_joblib.client.Extension subclass",
            "ext:Model": "is not a zndraw_joblib.client.Extension subclass",
            "ext:Abstract": "is abstract",
        }
        for spec, text in cases.items():
            with self.subTest(spec=spec):
                h = self.serve(spec)
                self.assertIsNone(h.message(), "nothing on stdout")
                self.assertEqual(h.proc.wait(timeout=TIMEOUT), 2)
                self.assertIn(text, h.stderr())
                self.assertIn("outage_handler:", h.stderr())
        h = self.serve("ext:Shift", "--run-kwargs", "ext:nope")
        self.assertIsNone(h.message())
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 2)
        h = self.serve()  # no argument: argparse's usage, exit 2
        self.assertIsNone(h.message())
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 2)
        self.assertIn("usage:", h.stderr())

    def test_import_error_inside_the_module_exits_1(self) -> None:
        self.write("broken.py", "import not_installed_dependency_xyz\n")
        h = self.serve("broken:Shift")
        self.assertIsNone(h.message())
        self.assertEqual(h.proc.wait(timeout=TIMEOUT), 1)
        self.assertIn("not_installed_dependency_xyz", h.stderr())

    @unittest.skipUnless(HAVE_ASE, "needs ase and numpy")
    def test_shift_extension_of_the_benchmark(self) -> None:
        h = self.start(["-m", "outage_handler", "shift_extension:Shift"],
                       extra_env={"OUTAGE_TEST_OUT": str(self.out)}, pythonpath=[HERE, EXTENSIONS])
        self.assertEqual(h.ready()["schema"]["properties"]["dx"], {"default": 1.0, "title": "Dx", "type": "number"})
        rid = h.task({"dx": 2.0}, task_id="s1", room="r1", token="tok-a")
        h.token("tok-b")
        self.assertEqual(h.result(rid), {"status": "completed"})
        self.assertEqual(h.run({}, task_id="s2", room="r2", token="tok-b"), {"status": "completed"})
        self.assertEqual(h.close(), 0)
        recs = self.records()
        self.assertEqual([(r["task"], r["room"], r["dx"]) for r in recs], [("s1", "r1", 2.0), ("s2", "r2", 1.0)])
        self.assertEqual(recs[1]["token"], "tok-b")
        self.assertAlmostEqual(recs[0]["com"][0], 2.0)
        self.assertEqual(recs[0]["pid"], recs[1]["pid"])


if __name__ == "__main__":
    unittest.main()
