"""Where a Python process spends its time while a benchmark loads it: py-spy
(`.venv/bin/pip install py-spy`; not a dependency of the project) samples the process from
outside without pausing it, and the raw stacks it writes are summed per function, by the
samples a function was running itself ("self") and those it was anywhere on the stack
("inclusive"). Idle samples (the loop waiting in epoll) are not recorded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def executable() -> str | None:
    """py-spy on PATH or beside this interpreter (a virtualenv's bin/), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def record(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` into `output` (raw, one stack a line)."""
    command = executable()
    if command is None:
        raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [
            command,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summary(raw: Path, top: int = 20) -> str:
    """The functions with the most samples in a raw py-spy file, self and inclusive."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            anywhere[frame] += int(count)
    if not total:
        return "no samples"

    def lines(counter: Counter[str]) -> list[str]:
        return [f"  {count / total:6.1%}  {frame}" for frame, count in counter.most_common(top)]

    return "\n".join([f"{total} samples; self:", *lines(own), "inclusive:", *lines(anywhere)])
