#!/usr/bin/env python3
"""``Shift`` as one process per task, for ``outage-worker --job``.

The payload comes on stdin (JSON), the task's ``ZNDRAW_*`` variables in the
environment; exit status 0 completes the task, anything else fails it with
the stderr's end. The same work as ``shift_extension.Shift`` served by a
long-lived handler, paying for the interpreter and the imports every time.
"""

import json
import sys

from pydantic import ValidationError

from shift_extension import Shift


def main() -> int:
    try:
        shift = Shift.model_validate(json.load(sys.stdin))
    except (ValueError, ValidationError) as e:
        print(e, file=sys.stderr)
        return 1
    shift.run(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
