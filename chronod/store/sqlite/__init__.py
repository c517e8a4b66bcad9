"""The embedded default store: one SQLite file shared by every chronod process on one host.

:class:`SQLiteStore` implements the contract (:mod:`chronod.store.base`) in one transaction per
method. The package, by concern:

* :mod:`~chronod.store.sqlite.schema`: the tables and their migrations;
* :mod:`~chronod.store.sqlite.connection`: the file, the connection and its pragmas, transactions
  (the concurrency model), SQLite's errors as chronod's;
* :mod:`~chronod.store.sqlite.rows`: reading rows into records;
* :mod:`~chronod.store.sqlite.leader`: the lease and the leader's fenced writes (job sync,
  dispatch, missed slots);
* :mod:`~chronod.store.sqlite.queue`: manual runs, claims and attempts, quarantine;
* :mod:`~chronod.store.sqlite.store`: the class itself, thin.
"""

from __future__ import annotations

from chronod.store.sqlite.connection import DEFAULT_BUSY_TIMEOUT_MS, result_code
from chronod.store.sqlite.schema import PRESENCE_SCHEMA, SCHEMA_VERSION
from chronod.store.sqlite.store import SQLiteStore

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "PRESENCE_SCHEMA",
    "SCHEMA_VERSION",
    "SQLiteStore",
    "result_code",
]
