"""The simulator's controls are defined once: the protocol, its HTTP routes, and three handles
(in-process, thread, HTTP client) that name the same controls with the same parameters. The
HTTP client drives a thread's simulator through every control. The simulator states the wire
on its own, and agrees with the client about it.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import inspect
import json
import re
import urllib.request
import uuid

import pytest
from tasks_support import REPO

from kraken.pay import errors, normalize_external_id
from kraken.pay.client import CANCEL_REQUEST_PATH
from kraken.pay.simulator import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    ControlRefused,
    Simulator,
    SimulatorClient,
    SimulatorControls,
    SimulatorThread,
)
from kraken.pay.simulator.app import make_app
from kraken.pay.simulator.controls import AWAITED_IN_PROCESS, CONTROL_NAMES
from kraken.pay.simulator.wire import (
    API_KEY_HEADER,
    API_SIGN_HEADER,
    CANCEL_PATH,
    CONTROL_ROUTES,
    PAY_ERROR_CLASS,
)

SIMULATOR = REPO / "kraken" / "pay" / "simulator"
HANDLES = (Simulator, SimulatorThread, SimulatorClient)


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


def parameters(function) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter but ``self``."""
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()][1:]


# ------------------------------------------------------------------------ one definition


def test_every_control_has_one_route_and_every_route_one_control():
    assert set(CONTROL_NAMES) == set(CONTROL_ROUTES)
    assert len({(r.verb, r.path) for r in CONTROL_ROUTES.values()}) == len(CONTROL_ROUTES)
    assert "create_requests" in CONTROL_NAMES and "url" not in CONTROL_NAMES


@pytest.mark.parametrize("handle", HANDLES, ids=lambda h: h.__name__)
def test_each_handle_implements_every_control_with_the_protocols_parameters(handle):
    public = {
        name
        for name, value in vars(handle).items()
        if not name.startswith("_") and callable(value) and not isinstance(value, type)
    }
    lifecycle = {"start", "stop"}
    assert public - lifecycle == set(CONTROL_NAMES)
    for name in CONTROL_NAMES:
        method = getattr(handle, name)
        assert parameters(method) == parameters(getattr(SimulatorControls, name)), name
        awaited = handle is Simulator and name in AWAITED_IN_PROCESS
        assert inspect.iscoroutinefunction(method) is awaited, name
        assert method.__doc__, f"{handle.__name__}.{name} has no docstring"


def test_the_thread_and_the_client_are_simulator_controls(thread):
    assert isinstance(thread, SimulatorControls)
    assert isinstance(SimulatorClient(thread.url), SimulatorControls)


def test_the_app_serves_every_control_route():
    sim = Simulator()
    app = make_app(sim._kraken, sim._faults, sim._counters, controls=sim, options=sim.options)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    assert {(r.verb, r.path) for r in CONTROL_ROUTES.values()} <= served


# ------------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def thread():
    with SimulatorThread(webhook_attempts=1, webhook_backoff=0) as sim:
        yield sim


@pytest.fixture
def sim_client(thread: SimulatorThread) -> SimulatorClient:
    thread.reset()
    return SimulatorClient(thread.url)


def signed_cancel(url: str, eid: str, nonce: int) -> dict:
    body = json.dumps({"nonce": str(nonce), "external_id": eid}).encode()
    digest = hashlib.sha256(str(nonce).encode() + body).digest()
    mac = hmac.new(base64.b64decode(DEMO_API_SECRET), CANCEL_PATH.encode() + digest, "sha512")
    headers = {
        API_KEY_HEADER: DEMO_API_KEY,
        API_SIGN_HEADER: base64.b64encode(mac.digest()).decode(),
        "Content-Type": "application/json",
    }
    request = urllib.request.Request(url + CANCEL_PATH, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_the_client_creates_reads_and_counts_requests(sim_client, thread):
    first, second, paid, gone = (new_id() for _ in range(4))
    assert sim_client.create_requests([first, second, paid, gone]) == 4
    assert sim_client.create_requests([uuid.UUID(int=7)], "expired") == 1  # canonicalised here
    assert signed_cancel(sim_client.url, first, 1) == {"error": [], "result": {}}
    assert sim_client.request(first) == {
        "external_id": first,
        "state": "cancelled",
        "cancel_calls": 1,
    }
    assert sim_client.request(new_id()) is None
    assert sim_client.pay(paid, "shop-42")["state"] == "paid"
    assert sim_client.expire(gone) == {"external_id": gone, "state": "expired", "cancel_calls": 0}
    assert list(sim_client.cancelled_at()) == [first]
    assert sim_client.summary()["by_state"] == {
        "cancelled": 1,
        "pending": 1,
        "paid": 1,
        "expired": 2,
    }
    assert sim_client.stats()["cancels_applied"] == thread.stats()["cancels_applied"] == 1


def test_the_client_sets_shows_and_clears_faults(sim_client, thread):
    sim_client.set_faults({"lockout": {"next": 2}, "webhook_duplicate": {"rate": 0.5}})
    assert (
        sim_client.faults()
        == thread.faults()
        == {
            "lockout": {"next": 2},
            "webhook_duplicate": {"rate": 0.5},
        }
    )
    sim_client.clear_faults()
    assert thread.faults() == {}


def test_the_client_registers_waits_for_and_clears_webhooks(sim_client, thread):
    assert sim_client.jwks() == thread.jwks()
    assert sim_client.register_webhook("http://127.0.0.1:9/hook") == ["http://127.0.0.1:9/hook"]
    assert sim_client.webhooks() == thread.webhooks() == ["http://127.0.0.1:9/hook"]
    (eid,) = [new_id()]
    sim_client.create_requests([eid])
    sim_client.pay(eid)
    sim_client.wait_webhooks(10)  # the single attempt to a closed port is given up at once
    assert sim_client.stats()["webhooks_failed"] == 1
    sim_client.clear_webhooks()
    assert thread.webhooks() == []


def test_the_client_resets(sim_client, thread):
    sim_client.create_requests([new_id()])
    sim_client.set_faults({"lockout": {"rate": 1.0}})
    sim_client.reset()
    assert thread.summary()["total"] == 0 and thread.faults() == {}


@pytest.mark.parametrize(
    ("call", "field", "status"),
    [
        (lambda c: c.set_faults({"explode": {"next": 1}}), "explode", 400),
        (lambda c: c.create_requests(["QQ", "bad!"]), "external_ids[1]", None),
        (lambda c: c.create_requests(["QQ"], "lost"), "state", 400),
        (lambda c: c.pay(new_id()), "external_id", 404),
        (lambda c: c.register_webhook("ftp://x"), "url", 400),
        (lambda c: c.wait_webhooks(0), "timeout", 400),
    ],
)
def test_the_client_raises_value_errors_naming_the_field(sim_client, call, field, status):
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:") as info:
        call(sim_client)
    if status is not None:
        assert isinstance(info.value, ControlRefused) and info.value.status == status


# ------------------------------------------------------------------------ the wire


def test_the_simulators_wire_constants_agree_with_the_clients():
    assert CANCEL_PATH == CANCEL_REQUEST_PATH
    assert PAY_ERROR_CLASS == errors.PAY_ERROR_CLASS
    client_source = (SIMULATOR.parent / "client.py").read_text()
    assert f'"{API_KEY_HEADER}"' in client_source and f'"{API_SIGN_HEADER}"' in client_source


def test_the_simulator_imports_only_the_public_names_of_the_client():
    """Its own modules, and `kraken.pay` itself (the public API), never the client's modules."""
    for path in sorted(SIMULATOR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("kraken")
            ):
                module = node.module
            elif isinstance(node, ast.Import):
                module = next((a.name for a in node.names if a.name.startswith("kraken")), "")
            else:
                continue
            if module:
                ok = module == "kraken.pay" or module.startswith("kraken.pay.simulator")
                assert ok, f"{path.name} imports {module}"


def test_docs_list_every_control_and_its_route():
    docs = (REPO / "docs" / "simulator.md").read_text()
    for name, route in CONTROL_ROUTES.items():
        assert f"| `{name}(" in docs, f"docs/simulator.md does not list {name}"
        assert f"`{route.verb} {route.path}" in docs, f"docs/simulator.md lacks {route.path}"
