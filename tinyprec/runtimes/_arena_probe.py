"""Child process for :func:`tinyprec.runtimes.tflm.tflm_arena_report_isolated`: model bytes on stdin,
the arena report as JSON on stdout. A native abort here cannot take the caller down."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def main() -> None:
    from tinyprec.errors import TinyprecError
    from tinyprec.runtimes.tflm import tflm_arena_report

    data = sys.stdin.buffer.read()
    try:
        report = tflm_arena_report(data, where=sys.argv[1] if len(sys.argv) > 1 else "<bytes>")
    except TinyprecError as err:
        print(json.dumps({"error": str(err)}))
        return
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
