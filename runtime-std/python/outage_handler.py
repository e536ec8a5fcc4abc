"""Serve one job's tasks to ``outage-worker --serve`` (handler protocol 1).

``outage-worker --serve 'ROOM:CATEGORY:NAME=COMMAND'`` keeps COMMAND alive and
sends it tasks over stdio, one at a time: newline-delimited JSON-RPC 2.0 on
stdin (worker -> handler) and stdout (handler -> worker), free text on
stderr. This module is the Python side of that protocol. It uses the
standard library only; ``zndraw_joblib`` and ``zndraw`` are imported when
level 2 needs them.

Level 1: a function
-------------------
::

    import outage_handler

    def shift(payload, ctx):
        print("task", ctx.task_id, "in", ctx.room)   # goes to stderr
        ...                                          # raise to fail the task

    outage_handler.serve(shift, schema={"type": "object"})

``fn(payload, ctx)`` runs once per task, ``payload`` being the task's
payload as parsed JSON. ``ctx`` has ``task_id``, ``job``, ``room``, ``url``,
``token`` and ``env`` (the task's ``ZNDRAW_*`` variables, a dict). The token
is always the current one: a ``token`` notification from the worker, which
can come while a task runs, updates ``ctx.token``, ``ctx.env`` and
``os.environ["ZNDRAW_TOKEN"]`` at once. The task's variables are also put
into ``os.environ`` before it runs. The return value is ignored; an
exception fails the task with the one-line text ``ExcType: message`` (the
traceback goes to stderr). ``serve`` sends ``ready`` once (with ``schema``
if given: the worker registers it as the job's schema), then serves tasks
until stdin closes, finishes the task it runs and returns; let the script
end there (exit status 0).

The protocol's stdout is private: the module keeps a duplicate of fd 1 and
points fd 1 (and ``sys.stdout``) at stderr with ``os.dup2(2, 1)``, so
``print()`` and C-level writes of user code go to stderr. This happens when
the module is imported under the worker (``OUTAGE_PROTOCOL=1`` in the
environment; import it before anything prints) and in any case when
``serve`` starts. stdin is read by a thread, so token notifications are seen
while a task runs; task requests are queued for the serving thread.

Level 2: an unchanged ZnDraw Extension
--------------------------------------
::

    python3 -m outage_handler package.module:ClassName \\
        [--run-kwargs module:func] [--vis module:func]
    python3 /path/to/outage_handler.py package.module:ClassName ...

serves a ``zndraw_joblib.client.Extension`` subclass the way zndraw_joblib's
``JobManager`` and ZnDraw's own worker do. The current directory is put on
``sys.path`` first (as ``python -m`` does), so ``module`` may live there.

* ``ready`` carries ``ClassName.model_json_schema()`` exactly as
  ``JobManager.register`` sends it (through its ``JobRegisterRequest``).
* ``--run-kwargs module:func``: ``func()`` is called ONCE, before ``ready``,
  and returns a dict of extra keyword arguments for every ``run`` (heavy,
  pre-loaded objects such as a torch model). ``providers`` is reserved, as
  in ZnDraw's ``register_job``.
* Per task: ``ClassName.model_validate(payload)``; a ``ValidationError``
  fails the task with pydantic's message. Then ``run``:

  - when ``zndraw`` is importable (and no ``--vis`` is given), as ZnDraw's
    ``ZnDraw._execute_task`` does: ``vis = ZnDraw(url=ctx.url,
    room=ctx.room, token=ctx.token)`` for each task, then
    ``instance.run(vis, providers={}, **run_kwargs)`` (this process
    registers no providers, so the handlers dict is empty), and
    ``vis.disconnect()`` afterwards, whatever happened;
  - otherwise ``instance.run(vis, **run_kwargs)`` as a bare ``JobManager``
    executor would, ``vis`` being what ``--vis module:func`` returns when
    called with ``ctx`` for each task, or None without ``--vis``.

  An exception fails the task with ``ExcType: message``.
* A bad ``module:Class`` argument (no such module or attribute, not an
  Extension subclass, abstract) or a bad hook is reported on stderr with
  exit status 2, before ``ready``; an exception raised by the user's module
  while it is imported, or by the ``--run-kwargs`` hook, exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import queue
import sys
import threading
import traceback
from typing import Any, Callable

__all__ = ["Context", "serve", "main"]

PROTOCOL = 1
# Lines to the worker are bounded at 1 MiB; error texts are cut well below.
_MAX_ERROR_CHARS = 64 * 1024

_lock = threading.Lock()
_proto_out = None  # the private duplicate of the original fd 1 (binary file)


def _take_stdout():
    """Keep fd 1 for the protocol and point fd 1 and sys.stdout at stderr.

    Idempotent: the first call wins, later calls return the same file.
    """
    global _proto_out
    with _lock:
        if _proto_out is None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            fd = os.dup(1)
            os.set_inheritable(fd, False)  # children of user code don't get it
            os.dup2(2, 1)
            _proto_out = os.fdopen(fd, "wb", buffering=1 << 16)
            sys.stdout = sys.stderr
        return _proto_out


if os.environ.get("OUTAGE_PROTOCOL") == "1":
    _take_stdout()


def _send(msg: dict) -> None:
    out = _take_stdout()
    line = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    with _lock:
        out.write(line + b"\n")
        out.flush()


def _one_line(exc: BaseException) -> str:
    """``ExcType: message`` on one line."""
    msg = " ".join(str(exc).splitlines()).strip()
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _bounded(text: str) -> str:
    if len(text) > _MAX_ERROR_CHARS:
        return text[: _MAX_ERROR_CHARS - 20] + " ... (cut)"
    return text


class _State:
    """What the reader thread and the serving thread share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: str | None = os.environ.get("ZNDRAW_TOKEN")
        self.current: Context | None = None

    def set_token(self, token: str) -> None:
        with self.lock:
            self.token = token
            os.environ["ZNDRAW_TOKEN"] = token
            if self.current is not None:
                self.current.env["ZNDRAW_TOKEN"] = token


class Context:
    """A task's context: ``task_id job room url token env``."""

    def __init__(self, state: _State, task_id: str, job: str, room: str, env: dict[str, str]) -> None:
        self._state = state
        self.task_id = task_id
        self.job = job
        self.room = room
        self.env = env
        self.url = env.get("ZNDRAW_URL") or os.environ.get("ZNDRAW_URL")

    @property
    def token(self) -> str | None:
        """The current token (a renewal during the task shows here at once)."""
        with self._state.lock:
            return self._state.token

    def __repr__(self) -> str:  # no token in logs
        return f"Context(task_id={self.task_id!r}, job={self.job!r}, room={self.room!r}, url={self.url!r})"


_EOF = object()


def _lines(fd: int):
    """The lines of fd, read with os.read: no buffered file, so no lock a
    daemon thread could hold when the interpreter shuts down mid-read."""
    buf = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        start = len(buf)
        buf += chunk
        pos = buf.find(b"\n", start)
        if pos < 0:
            continue
        cut = 0
        while pos >= 0:
            yield bytes(buf[cut:pos])
            cut = pos + 1
            pos = buf.find(b"\n", cut)
        del buf[:cut]
    if buf:
        yield bytes(buf)


def _reader(fd: int, tasks: queue.Queue, state: _State) -> None:
    """Read the worker's lines: tokens applied at once, tasks queued."""
    try:
        for line in _lines(fd):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as e:
                print(f"outage_handler: ignored a line that is not JSON ({e})", file=sys.stderr, flush=True)
                continue
            if not isinstance(msg, dict):
                continue
            method = msg.get("method")
            params = msg.get("params")
            if method == "token":
                if isinstance(params, dict) and isinstance(params.get("token"), str):
                    state.set_token(params["token"])
            elif method == "task" and "id" in msg:
                # The task's token is applied here, in stream order, so a
                # renewal that follows the request is not undone by it.
                env = params.get("env") if isinstance(params, dict) else None
                if isinstance(env, dict) and isinstance(env.get("ZNDRAW_TOKEN"), str):
                    state.set_token(env["ZNDRAW_TOKEN"])
                tasks.put(msg)
            # anything else: ignored (forward compatibility)
    except Exception:  # a broken stdin ends the handler like EOF
        traceback.print_exc(file=sys.stderr)
    finally:
        tasks.put(_EOF)


def _serve(run_one: Callable[[Any, Context], str | None], schema: dict | None) -> None:
    """The loop: ``run_one`` returns None (completed) or an error text."""
    _take_stdout()
    state = _State()
    tasks: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(0, tasks, state), name="outage-stdin", daemon=True).start()
    params: dict[str, Any] = {"protocol": PROTOCOL}
    if schema is not None:
        params["schema"] = schema
    _send({"jsonrpc": "2.0", "method": "ready", "params": params})
    while True:
        msg = tasks.get()
        if msg is _EOF:
            break
        rid = msg["id"]
        p = msg.get("params")
        if not isinstance(p, dict) or "payload" not in p:
            _reply(rid, "handler: task request without params.payload")
            continue
        env = p.get("env") if isinstance(p.get("env"), dict) else {}
        env = {str(k): str(v) for k, v in env.items()}
        with state.lock:
            if state.token is not None:
                env["ZNDRAW_TOKEN"] = state.token
        os.environ.update(env)
        ctx = Context(
            state,
            task_id=str(p.get("id", env.get("ZNDRAW_TASK_ID", ""))),
            job=str(p.get("job", env.get("ZNDRAW_JOB", ""))),
            room=str(p.get("room", env.get("ZNDRAW_ROOM", ""))),
            env=env,
        )
        with state.lock:
            state.current = ctx
        try:
            error = run_one(p["payload"], ctx)
        except BaseException as e:  # SystemExit, KeyboardInterrupt: reply, then go
            traceback.print_exc(file=sys.stderr)
            _reply(rid, _one_line(e))
            raise
        finally:
            with state.lock:
                state.current = None
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        _reply(rid, error)


def _reply(rid: Any, error: str | None) -> None:
    if error is None:
        result = {"status": "completed"}
    else:
        result = {"status": "failed", "error": _bounded(error)}
    _send({"jsonrpc": "2.0", "id": rid, "result": result})


def serve(fn: Callable[[Any, Context], Any], *, schema: dict | None = None) -> None:
    """Serve tasks with ``fn(payload, ctx)`` until stdin closes (level 1)."""

    def run_one(payload: Any, ctx: Context) -> str | None:
        try:
            fn(payload, ctx)
        except Exception as e:
            print(f"outage_handler: task {ctx.task_id} failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return _one_line(e)
        return None

    _serve(run_one, schema)


# ---------------------------------------------------------------- level 2


class _Usage(Exception):
    """A bad argument: stderr, exit status 2."""


def _resolve(spec: str, what: str) -> Any:
    """``module:attr`` (attr may be dotted) -> the object."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise _Usage(f"{what} must be 'module:name' (e.g. 'package.module:ClassName'), not {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise _Usage(
                f"{what} {spec!r}: no module named {e.name!r} (sys.path starts with {sys.path[:3]!r})"
            ) from None
        raise  # the module itself failed to import one of its dependencies
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _Usage(f"{what} {spec!r}: module {module!r} has no attribute {attr!r}") from None
    return obj


def _extension_class(spec: str) -> type:
    cls = _resolve(spec, "the extension")
    try:
        from zndraw_joblib.client import Extension
    except ImportError as e:
        raise _Usage(f"serving {spec!r} needs zndraw_joblib (pip install zndraw-joblib): {e}") from None
    if not isinstance(cls, type) or not issubclass(cls, Extension):
        raise _Usage(f"{spec!r} is not a zndraw_joblib.client.Extension subclass (got {cls!r})")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise _Usage(f"{spec!r} is abstract (does not implement: {missing})")
    return cls


def _registered_schema(cls: type) -> dict:
    """The schema exactly as ``JobManager.register`` sends it."""
    schema = cls.model_json_schema()
    try:
        from zndraw_joblib.schemas import JobRegisterRequest
    except ImportError:
        return schema
    category = getattr(getattr(cls, "category", None), "value", "modifiers")
    dumped = JobRegisterRequest(category=str(category), name=cls.__name__, schema=schema).model_dump(
        exclude_none=True, mode="json"
    )
    # pydantic dumps the field by its name (schema_), not its alias
    for key in ("schema_", "schema"):
        if key in dumped:
            return dumped[key]
    return schema


def _check_category(cls: type) -> None:
    job = os.environ.get("ZNDRAW_JOB", "")
    parts = job.split(":")
    category = getattr(getattr(cls, "category", None), "value", None)
    if len(parts) >= 3 and category is not None and parts[-2] != category:
        print(
            f"outage_handler: warning: {cls.__name__}.category is {category!r} but the job is {job!r}",
            file=sys.stderr,
            flush=True,
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m outage_handler",
        description="Serve a zndraw_joblib Extension to outage-worker --serve (handler protocol 1).",
    )
    p.add_argument("extension", metavar="module:ClassName", help="the Extension subclass to serve")
    p.add_argument(
        "--run-kwargs",
        metavar="module:func",
        help="called once before ready; returns a dict of extra keyword arguments for every run()",
    )
    p.add_argument(
        "--vis",
        metavar="module:func",
        help="called with the task's ctx for every task; its value is run()'s vis (default: "
        "zndraw.ZnDraw(url=, room=, token=) when zndraw is importable, else None)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``python3 -m outage_handler module:ClassName [--run-kwargs m:f] [--vis m:f]``."""
    _take_stdout()
    # A second import of this file (by user code) finds this module.
    sys.modules.setdefault("outage_handler", sys.modules[__name__])
    args = _parser().parse_args(argv)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        cls = _extension_class(args.extension)
        hook = _resolve(args.run_kwargs, "--run-kwargs") if args.run_kwargs else None
        vis_factory = _resolve(args.vis, "--vis") if args.vis else None
        for name, f in (("--run-kwargs", hook), ("--vis", vis_factory)):
            if f is not None and not callable(f):
                raise _Usage(f"{name} {f!r} is not callable")
        schema = _registered_schema(cls)
        run_kwargs = dict(hook()) if hook is not None else {}  # once, before ready
        if not all(isinstance(k, str) for k in run_kwargs):
            raise _Usage("--run-kwargs returned a dict with non-string keys")
        zn_draw = None
        if vis_factory is None:
            try:
                from zndraw import ZnDraw as zn_draw
            except ImportError:
                zn_draw = None
        if zn_draw is not None and "providers" in run_kwargs:
            raise _Usage("--run-kwargs: 'providers' is reserved and injected by the worker")
    except _Usage as e:
        print(f"outage_handler: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc(file=sys.stderr)
        print(f"outage_handler: could not start serving {args.extension!r} (see above)", file=sys.stderr, flush=True)
        return 1
    _check_category(cls)
    from pydantic import ValidationError

    def run_one(payload: Any, ctx: Context) -> str | None:
        try:
            instance = cls.model_validate(payload)
        except ValidationError as e:
            print(f"outage_handler: task {ctx.task_id}: invalid payload: {e}", file=sys.stderr)
            return str(e)
        try:
            if zn_draw is not None:
                vis = zn_draw(url=ctx.url, room=ctx.room, token=ctx.token)
                try:
                    instance.run(vis, providers={}, **run_kwargs)
                finally:
                    vis.disconnect()
            else:
                vis = vis_factory(ctx) if vis_factory is not None else None
                instance.run(vis, **run_kwargs)
        except Exception as e:
            print(f"outage_handler: task {ctx.task_id} failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return _one_line(e)
        return None

    _serve(run_one, schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
