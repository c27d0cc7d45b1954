"""Run several Python processes that start their migration at the same moment.

A worker script (``python -c CODE URL``) builds what it needs, prints ``ready``,
waits for a line on stdin, runs, and prints its outcomes as JSON on stdout. The
parent releases them together once all are ready: a barrier, not a sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t

from .services.common import REPO_ROOT as ROOT

#: ``spawn`` fixture's type: ``subprocess.Popen`` in text mode, reaped after the test.
Spawn = t.Callable[..., subprocess.Popen[str]]


def run_together(spawn: Spawn, code: str, url: str, count: int = 8) -> list[t.Any]:
    """Start ``count`` workers running ``code`` on ``url``, release them at once
    when all are ready, check each exits 0, and return each one's JSON output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        spawn(
            [sys.executable, "-c", code, url],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.communicate(timeout=30)[1][-3000:]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(out) for out, _ in results]
