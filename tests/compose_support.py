"""docker-compose.yml and kraken.env.example as the tests read them: the services, and the
variables the example sets or names."""

from __future__ import annotations

import re

import yaml
from tasks_support import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = REPO / "kraken.env.example"


def example_env() -> dict[str, str]:
    """The variables kraken.env.example sets (not the commented-out ones)."""
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def documented_variables() -> set[str]:
    """Every variable kraken.env.example names, set or commented out."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
