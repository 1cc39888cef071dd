"""What the workers and beat leave for ``kraken-pay check`` to read, and check themselves.

* Beat's heartbeat: each ``dispatch_due`` run stores Redis's own time under
  :data:`HEARTBEAT_KEY`, so the check can say whether beat runs (and a worker takes its
  tasks) by the clock it compares with.
* The secret's length: a worker warns at start when ``KRAKEN_API_SECRET`` decodes to fewer
  bytes than Kraken's secrets do.

The check itself (the signed probe of the key, the fleet, Redis's safety) is the command
line's: :mod:`kraken_pay_cli.check`. Nothing here sends a request.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HEARTBEAT_KEY",
    "KRAKEN_SECRET_BYTES",
    "beat_heartbeat",
    "record_heartbeat",
    "secret_warning",
]

KRAKEN_SECRET_BYTES = 64  # what Kraken's API secrets decode to
HEARTBEAT_KEY = "{prefix}:dispatch_due:heartbeat"  # Redis TIME of the last dispatch_due run
HEARTBEAT_TTL = 86400

# KEYS: heartbeat. ARGV: ttl. Stores Redis's own time, the clock check compares with.
_HEARTBEAT = """
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'EX', ARGV[1])
return 1
"""


def secret_warning(size: int) -> str | None:
    """Why a secret of ``size`` bytes is suspect, or ``None`` when it is as long as Kraken's."""
    if size >= KRAKEN_SECRET_BYTES:
        return None
    return (
        f"KRAKEN_API_SECRET decodes to {size} bytes; Kraken's secrets decode to "
        f"{KRAKEN_SECRET_BYTES} (is it cut short, or another service's?)"
    )


def record_heartbeat(redis: Any, prefix: str = "kraken") -> None:
    """``dispatch_due`` ran: beat is alive and a worker takes its tasks."""
    key = HEARTBEAT_KEY.format(prefix=prefix)
    redis.register_script(_HEARTBEAT)(keys=[key], args=[HEARTBEAT_TTL])


def beat_heartbeat(redis: Any, prefix: str = "kraken") -> float | None:
    """Seconds since ``dispatch_due`` last ran (by Redis's clock), or ``None`` if never."""
    raw = redis.get(HEARTBEAT_KEY.format(prefix=prefix))
    if raw is None:
        return None
    seconds, micros = redis.time()
    return max(0.0, seconds + micros / 1e6 - float(raw))
