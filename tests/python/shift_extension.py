"""A real ZnDraw extension for the tests and the benchmark of issue 20.

``Shift`` (category modifiers) builds a water molecule with ase, shifts its
positions by ``dx`` along x and reports the new centre of mass: one JSON
line per task appended to the file named by ``OUTAGE_TEST_OUT`` (task id,
room, token, dx, com, pid), or to stderr without it, so a test can check
that each task ran once and with which token.

Served unchanged three ways (see ``benches/extension.sh``): by
zndraw_joblib's ``JobManager``, by ``outage_handler`` under ``outage-worker
--serve`` (``python3 -m outage_handler shift_extension:Shift``) and, one
process per task, by ``shift_oneshot.py`` under ``outage-worker --job``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, ClassVar

import ase
import numpy as np
from zndraw_joblib.client import Category, Extension

# H2O (ase's g2 geometry: O, H, H), in Angstrom.
WATER = [[0.0, 0.0, 0.119262], [0.0, 0.763239, -0.477047], [0.0, -0.763239, -0.477047]]


def shifted_com(dx: float) -> list[float]:
    atoms = ase.Atoms("OH2", positions=WATER)
    atoms.positions += np.array([dx, 0.0, 0.0])
    return [round(float(c), 9) + 0.0 for c in atoms.get_center_of_mass()]  # no -0.0


def record(line: dict[str, Any]) -> None:
    text = json.dumps(line, separators=(",", ":")) + "\n"
    path = os.environ.get("OUTAGE_TEST_OUT")
    if path:
        # one write with O_APPEND: lines of concurrent processes do not mix
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


class Shift(Extension):
    """Shift a water molecule by dx (Angstrom, along x)."""

    category: ClassVar[Category] = Category.MODIFIER
    dx: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> None:
        com = shifted_com(self.dx)
        env = os.environ
        record(
            {
                "task": env.get("ZNDRAW_TASK_ID"),
                "room": getattr(vis, "room", None) or env.get("ZNDRAW_ROOM"),
                "token": getattr(vis, "token", None) or env.get("ZNDRAW_TOKEN"),
                "dx": self.dx,
                "com": com,
                "pid": os.getpid(),
            }
        )
