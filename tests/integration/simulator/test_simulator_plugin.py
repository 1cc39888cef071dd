"""The pytest plugin, as a user meets it: installed through its entry point, two fixtures that
start clean in every test (faults, requests and counts cleared), the thread's server reused.

Each test writes a user's test file and runs pytest on it in a fresh process, so the plugin is
found the way a user's pytest finds it, through the ``pytest11`` entry point.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from tasks_support import REPO

pytest_plugins = ["pytester"]

USER_TESTS = """
import json
import urllib.request

import pytest

from kraken.pay import Credentials, KrakenPayClient, TransientError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDENTIALS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
EID = "AAAAAAAAAAE"
urls = []


@pytest.mark.asyncio
async def test_async_first_leaves_a_fault_and_a_request(kraken_pay_simulator):
    sim = kraken_pay_simulator
    sim.create_requests([EID])
    sim.set_faults({"service_unavailable": {"next": 5}})
    async with KrakenPayClient(CREDENTIALS, base_url=sim.url) as client:
        with pytest.raises(TransientError):
            await client.cancel_request(EID)
    assert sim.stats()["faults_injected"]["service_unavailable"] == 1


@pytest.mark.asyncio
async def test_async_second_starts_clean(kraken_pay_simulator):
    sim = kraken_pay_simulator
    assert sim.faults() == {} and sim.request(EID) is None and sim.stats()["requests"] == 0
    sim.create_requests([EID])
    async with KrakenPayClient(CREDENTIALS, base_url=sim.url) as client:
        await client.cancel_request(EID)
    assert sim.request(EID)["state"] == "cancelled"


def test_thread_first_leaves_a_fault_and_a_request(kraken_pay_simulator_thread):
    sim = kraken_pay_simulator_thread
    urls.append(sim.url)
    sim.create_requests([EID])
    sim.set_faults({"lockout": {"rate": 1.0}})
    with urllib.request.urlopen(sim.url + "/_sim/stats", timeout=5) as answer:
        assert json.loads(answer.read())["requests"] == 0


def test_thread_second_starts_clean_on_the_same_server(kraken_pay_simulator_thread):
    sim = kraken_pay_simulator_thread
    urls.append(sim.url)
    assert urls[0] == urls[1]
    assert sim.faults() == {} and sim.request(EID) is None and sim.summary()["total"] == 0
"""

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "kraken_pay_simulator"]
    assert plugin.value == "kraken.pay.simulator.pytest_plugin"


def test_a_users_tests_get_both_fixtures_cleared_between_tests(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=4)


def test_a_conftest_may_change_the_options(pytester):
    pytester.makeini(INI)
    pytester.makeconftest(
        """
import pytest
from kraken.pay.simulator import SimulatorOptions

@pytest.fixture(scope="session")
def kraken_pay_simulator_options():
    return SimulatorOptions(keys={"user-key": "c2VjcmV0"}, nonce_window=7)
"""
    )
    pytester.makepyfile(
        test_user="""
def test_options(kraken_pay_simulator_thread):
    assert kraken_pay_simulator_thread.options.nonce_window == 7
    assert list(kraken_pay_simulator_thread.options.keys) == ["user-key"]
"""
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_plugin_can_be_disabled(pytester):
    pytester.makepyfile(test_user="def test_x(kraken_pay_simulator_thread): pass")
    result = pytester.runpytest_subprocess("-p", "no:kraken_pay_simulator")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'kraken_pay_simulator_thread' not found*"])


def test_the_readme_example_runs(pytester):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The simulator in your own tests", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makeini(INI + "asyncio_mode = auto\n")
    pytester.makepyfile(test_readme=example)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
