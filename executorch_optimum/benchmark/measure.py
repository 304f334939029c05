"""Runs a child process and measures exactly it: wall time, CPU time and peak RSS.

`os.wait4` on the child's pid returns the rusage of that child (and of the descendants it
waited for), not of every child this process ever had, as RUSAGE_CHILDREN would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from executorch_optimum.runtime.threads import without_our_openmp_setting


@dataclass(frozen=True)
class ProcessMeasurement:
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    tail: tuple[str, ...]  # the last output lines (for error messages)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with its import path, so `python -m` finds our packages."""
    env = without_our_openmp_setting(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def run_measured(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: str | None = None,
    tail_lines: int = 20,
) -> ProcessMeasurement:
    """Runs `cmd`, streaming each output line (stdout and stderr merged) to `on_line`."""
    tail: deque[str] = deque(maxlen=tail_lines)
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    proc.stdout.close()
    return ProcessMeasurement(
        returncode=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        tail=tuple(tail),
    )
