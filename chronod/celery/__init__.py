"""chronod and Celery (docs/celery.md): ``celery`` jobs, the hook for the Celery app, the import.

Nothing here imports Celery at import time: chronod itself never needs it, a ``celery`` job needs
it only in the worker that publishes it (:mod:`chronod.celery.publish`), and :func:`install` is
called by a Celery app, which has it.
"""

from __future__ import annotations

import os
from typing import Any


def install(
    app: Any,
    *,
    config: str | os.PathLike[str] | None = None,
    store: str | None = None,
    metrics: str | None = None,
) -> None:
    """Run each chronod run once on ``app``'s workers and record how it went in chronod's store.

    See :mod:`chronod.celery.hook`; ``config`` is the ``schedules.toml`` naming the store (default
    ``$CHRONOD_CONFIG``, else ``./schedules.toml``), ``store`` a URL that overrides it, ``metrics``
    a ``HOST:PORT`` where ``celery worker`` serves the run metrics of what it executed
    (:mod:`chronod.celery.metrics`)."""
    from chronod.celery.hook import install as install_hook

    install_hook(app, config=config, store=store, metrics=metrics)
