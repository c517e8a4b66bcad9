"""chronod and Celery (docs/celery.md): ``celery`` jobs, the hook for the Celery app, the import.

Nothing here imports Celery at import time: chronod itself never needs it, and a ``celery`` job
needs it only in the worker that publishes it (:mod:`chronod.celery.publish`).
"""
