"""One benchmark process of bench/peers.py, run by the Python of the client's own venv.

Usage: ``python _peer_runner.py CONFIG.json``. It builds the client named in the config,
makes its first cancel as a warm-up (connection, scripts), prints ``ready``, waits for
``go`` on stdin (the parent's start event for all processes), cancels the other ids one
after the other, and prints one JSON line: ``{"began", "ended", "errors"}``. It imports
nothing at load time: python-kraken-sdk's ``kraken`` package and ours share a name, so each
client is imported only inside its own venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

CANCEL = "/0/private/Pay/request/cancel"


def _ours(cfg: dict[str, Any]) -> tuple[float, float, int]:
    import redis.asyncio as aioredis

    from kraken.pay import Credentials, KrakenPayClient, RedisNonce
    from kraken.pay.errors import KrakenError

    async def main() -> tuple[float, float, int]:
        redis = aioredis.Redis.from_url(cfg["redis_url"])
        creds = Credentials(cfg["key"], cfg["secret"])
        nonce = RedisNonce(redis, creds.key_id)
        errors = 0
        async with KrakenPayClient(creds, base_url=cfg["url"], nonce=nonce) as client:
            await client.cancel_request(cfg["ids"][0])
            await nonce.aclose()  # the warm-up's lease is not part of the race
            await asyncio.to_thread(_wait_for_go)
            began = time.time()
            for eid in cfg["ids"][1:]:
                try:
                    await client.cancel_request(eid)
                except KrakenError:
                    errors += 1
            ended = time.time()
        await redis.aclose()
        return began, ended, errors

    return asyncio.run(main())


def _sdk(cfg: dict[str, Any]) -> tuple[float, float, int]:
    from kraken.base_api import SpotClient

    client = SpotClient(key=cfg["key"], secret=cfg["secret"], url=cfg["url"])
    errors = 0
    with contextlib.suppress(Exception):
        client.request("POST", CANCEL, params={"external_id": cfg["ids"][0]}, do_json=True)
    _wait_for_go()
    began = time.time()
    for eid in cfg["ids"][1:]:
        try:
            client.request("POST", CANCEL, params={"external_id": eid}, do_json=True)
        except Exception:  # any failure counts; the simulator says which
            errors += 1
    return began, time.time(), errors


def _sdk_async(cfg: dict[str, Any]) -> tuple[float, float, int]:
    from kraken.base_api import SpotAsyncClient

    async def main() -> tuple[float, float, int]:
        client = SpotAsyncClient(key=cfg["key"], secret=cfg["secret"], url=cfg["url"])
        errors = 0
        with contextlib.suppress(Exception):
            first = {"external_id": cfg["ids"][0]}
            await client.request("POST", CANCEL, params=first, do_json=True)
        await asyncio.to_thread(_wait_for_go)
        began = time.time()
        for eid in cfg["ids"][1:]:
            try:
                await client.request("POST", CANCEL, params={"external_id": eid}, do_json=True)
            except Exception:  # any failure counts; the simulator says which
                errors += 1
        ended = time.time()
        await client.close()
        return began, ended, errors

    return asyncio.run(main())


def _krakenex(cfg: dict[str, Any]) -> tuple[float, float, int]:
    import krakenex

    api = krakenex.API(key=cfg["key"], secret=cfg["secret"])
    api.uri = cfg["url"]
    errors = 0
    with contextlib.suppress(Exception):
        api.query_private("Pay/request/cancel", {"external_id": cfg["ids"][0]})
    _wait_for_go()
    began = time.time()
    for eid in cfg["ids"][1:]:
        try:
            if api.query_private("Pay/request/cancel", {"external_id": eid}).get("error"):
                errors += 1
        except Exception:  # any failure counts; the simulator says which
            errors += 1
    return began, time.time(), errors


CLIENTS = {"ours": _ours, "sdk": _sdk, "sdk-async": _sdk_async, "krakenex": _krakenex}


def _wait_for_go() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def main() -> None:
    with open(sys.argv[1]) as file:
        cfg = json.load(file)
    began, ended, errors = CLIENTS[cfg["client"]](cfg)
    print(json.dumps({"began": began, "ended": ended, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
