"""The PostgreSQL server of the tests: its URL from TRAJECTORIES_TEST_POSTGRES_URL (``make test``
starts one through .ci/postgres.sh), and throw-away schemas in it.

Without the variable the PostgreSQL tests fail under CI (CI=true), where they must run, and
skip elsewhere; a URL that is set but does not answer always fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

ENV = "TRAJECTORIES_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test server's URL, checked to answer; fail (CI) or skip (elsewhere) without one."""
    url = os.environ.get(ENV, "").strip()
    if not url:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(
                f"{ENV} is not set, and CI must test the PostgreSQL exporter: run the suite "
                "through `make test`, which starts a server with .ci/postgres.sh",
                pytrace=False,
            )
        pytest.skip(f"{ENV} is not set (`make test` starts a PostgreSQL through .ci/postgres.sh)")
    try:
        with psycopg.connect(url, connect_timeout=10) as con:
            con.execute("SELECT 1")
    except psycopg.Error as error:
        pytest.fail(f"{ENV} is set but the server does not answer: {error}", pytrace=False)
    return url


def unique_schema(prefix: str) -> str:
    """A schema name no other test (or xdist worker, or earlier run) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def scratch_schema(url: str, prefix: str) -> Iterator[str]:
    """A fresh schema name, dropped (with whatever it holds) afterwards."""
    schema = unique_schema(prefix)
    try:
        yield schema
    finally:
        drop_schema(url, schema)
