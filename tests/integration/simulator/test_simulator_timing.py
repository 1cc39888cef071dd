"""What the simulator bounds in time: slow headers and bodies, idle kept-alive connections, and
refused bodies, after which the server lingers (a second) so the client can read the refusal.
Each waits out a timeout of the server's, which is why these are not unit tests; the bounds
themselves: unit/simulator/test_simulator_bounds.py."""

from __future__ import annotations

import asyncio
import json
import time

from simulator_support import OK, closed_by_server, head, new_id, opened, post_json, signed

from kraken.pay.simulator import DEMO_API_KEY, Simulator
from kraken.pay.simulator.wire import CANCEL_PATH


async def test_a_cancel_body_over_its_limit_is_refused_from_its_content_length():
    async with Simulator() as sim:
        reader, writer = await opened(sim)
        writer.write(head(CANCEL_PATH, 60_000_000))  # announced, never sent
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert sim.stats()["bodies_too_large"] == 1 and sim.stats()["cancels_applied"] == 0


async def test_a_streamed_body_is_refused_as_it_passes_the_limit_not_at_its_end():
    async with Simulator(max_api_body=1024) as sim:
        reader, writer = await opened(sim)
        writer.write(head(CANCEL_PATH, Transfer_Encoding="chunked"))
        for _ in range(3):  # 1,536 bytes of an endless body: its end never comes
            writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413 ")


async def test_connections_that_do_not_finish_their_headers_in_time_are_closed():
    async with Simulator(header_timeout=0.2) as sim:
        connections = [await opened(sim) for _ in range(20)]
        for _, writer in connections:
            writer.write(b"POST /0/private/Pay/request/cancel HTTP/1.1\r\nHost: sim\r\nX-Slow")
        started = time.monotonic()
        answers = await asyncio.gather(*(closed_by_server(reader) for reader, _ in connections))
        assert time.monotonic() - started < 4
        assert answers == [b""] * 20  # closed, nothing answered
        for _, writer in connections:
            writer.close()
        assert sim.stats()["slow_requests"] == 20


async def test_a_connection_that_sent_its_headers_in_time_is_not_cut_by_that_timeout(http):
    # Each answer is held three header timeouts: the timer was disarmed by the headers.
    async with Simulator(header_timeout=0.1, latency=(0.3, 0.3)) as sim:
        ids = [new_id(), new_id()]
        sim.create_requests(ids)
        for nonce, eid in enumerate(ids, start=1):
            body, headers = signed({"nonce": str(nonce), "external_id": eid})
            status, raw = await post_json(http, sim.url + CANCEL_PATH, body, headers)
            assert (status, json.loads(raw)) == (200, OK)
        assert sim.stats()["connections_opened"] == 1 and sim.stats()["slow_requests"] == 0


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout():
    async with Simulator(keepalive_timeout=0.3) as sim:
        reader, writer = await opened(sim)
        writer.write(b"GET /_sim/stats HTTP/1.1\r\nHost: sim\r\n\r\n")
        started = time.monotonic()
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and b"keep-alive" not in answer.lower()
        assert 0.2 < time.monotonic() - started < 4


async def test_a_body_that_does_not_arrive_in_time_closes_the_connection_unprocessed():
    async with Simulator(body_timeout=0.2) as sim:
        (eid,) = [new_id()]
        sim.create_requests([eid])
        body, headers = signed({"nonce": "1", "external_id": eid})
        reader, writer = await opened(sim)
        writer.write(
            head(CANCEL_PATH, len(body), API_Key=DEMO_API_KEY, API_Sign=headers["API-Sign"])
        )
        writer.write(body[:10])
        assert await closed_by_server(reader) == b""
        writer.close()
        assert sim.request(eid)["state"] == "pending"
        assert sim.stats()["slow_requests"] == 1
