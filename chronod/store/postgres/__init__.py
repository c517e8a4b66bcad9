"""The PostgreSQL store: chronod's state in one schema of a database teams already run.

:class:`~chronod.store.postgres.store.PostgresStore` implements the contract
(:mod:`chronod.store.base`) in one SERIALIZABLE transaction per method (docs/postgres.md says
why). The package, by concern:

* :mod:`~chronod.store.postgres.url`: checking and redacting ``postgresql://`` URLs (imports no
  driver: ``chronod check`` uses it without the extra installed);
* :mod:`~chronod.store.postgres.schema`: the tables, their version and upgrades;
* :mod:`~chronod.store.postgres.connection`: connections, transactions and their retries,
  PostgreSQL's errors as chronod's, LISTEN/NOTIFY;
* :mod:`~chronod.store.postgres.rows`: the statements both sides share;
* :mod:`~chronod.store.postgres.leader`: the lease and the leader's fenced writes;
* :mod:`~chronod.store.postgres.queue`: manual runs, claims and attempts, quarantine;
* :mod:`~chronod.store.postgres.store`: the class itself, thin.

This module imports nothing from psycopg (the optional ``chronod[postgres]`` extra); only
``store`` and what it imports do.
"""

from __future__ import annotations
