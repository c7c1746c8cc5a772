"""Shared fixtures: each counterpart is a pytest plugin under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.billing",
    "tests.fixtures.support",
    "tests.fixtures.tryton",
    "tests.fixtures.netsuite",
    "tests.fixtures.temporal",
    "tests.fixtures.databases",
    "tests.fixtures.faults",
    "tests.fixtures.nats",
]
