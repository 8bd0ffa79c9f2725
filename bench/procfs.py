"""What Linux says of a process in /proc: its memory now and at its peak."""

from __future__ import annotations

import re
from pathlib import Path


def status_kib(pid: int, key: str) -> int:
    """A /proc/PID/status figure in KiB (VmHWM: the peak resident set; VmRSS: now)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def reset_peak(pid: int) -> bool:
    """Starts VmHWM again from the resident set now (Linux 4.0+, a process of this user)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
