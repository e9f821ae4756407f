"""Backoff between attempts: exponential with full jitter (as src/common/retry.ts backoffDelay), and a
sleep that runs on eventlet's hub when the process is monkey-patched (cinder-backup is)."""

from __future__ import annotations

import random
import time


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))


def sleep(seconds: float) -> None:
    # time.sleep is eventlet's green sleep when the process is monkey-patched.
    time.sleep(max(0.0, seconds))
