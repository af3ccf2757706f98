"""Publishes N no-op tasks for the end-to-end reference: `python -m bench.publish N OUT.json`.

One task per id, sent by name with Celery's own `send_task` (no retry): the bare-Celery way.
payhook's receiver writes the same protocol-v2 message to Redis itself (`payhook.broker.Publisher`)
because it is cheaper; the publisher runs in its own process here, so its cost does not slow the
reference's worker either way.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.noop import NOOP_TASK, app


def main(argv: list[str]) -> int:
    count, out = int(argv[0]), Path(argv[1])
    app.loader.import_default_modules()
    app.connection_for_write().ensure_connection(max_retries=3)
    first_wall = time.time()
    for index in range(count):
        app.send_task(NOOP_TASK, args=[[index]], retry=False)
    elapsed = time.time() - first_wall
    out.write_text(json.dumps({"first_wall": first_wall, "elapsed_s": elapsed,
                               "rate": count / elapsed if elapsed else 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
