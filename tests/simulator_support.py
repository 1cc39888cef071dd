"""Requests to a simulator made by hand: signed cancel bodies, and raw connections that send a
request head, or half of one, and read what the server sends until it closes."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import aiohttp

from kraken.pay import normalize_external_id
from kraken.pay.signing import sign
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator
from kraken.pay.simulator.wire import CANCEL_PATH

OK = {"error": [], "result": {}}


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


def signed(payload: dict | str) -> tuple[bytes, dict[str, str]]:
    body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    nonce = json.loads(body).get("nonce", "") if isinstance(payload, dict) else ""
    headers = {
        "API-Key": DEMO_API_KEY,
        "API-Sign": sign(CANCEL_PATH, str(nonce), body, DEMO_API_SECRET),
        "Content-Type": "application/json",
    }
    return body, headers


async def post_json(http: aiohttp.ClientSession, url: str, body: bytes, headers=None):
    async with http.post(url, data=body, headers=headers or {}) as response:
        return response.status, await response.read()


async def opened(sim: Simulator) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(sim.url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection, failing after ``within``."""
    return await asyncio.wait_for(reader.read(), within)


def head(path: str, length: int | None = None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: sim"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
