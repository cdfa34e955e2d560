"""A real PostgreSQL server for the deployment tests (one per session; a database per test)."""

import itertools

import pytest
from postgres_server import postgres_binaries, running_postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                    "apt-get install postgresql (the CI image has them)")
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_db(postgres):
    """A fresh, empty database on the session's server; returns its name."""
    return postgres.create_database(f"dagster_{next(_names)}")
