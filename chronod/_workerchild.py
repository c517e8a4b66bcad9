"""A worker child: ``python -m chronod._workerchild SETTINGS_FD`` (see :mod:`chronod.worker`).

Only its supervisor starts it (:class:`chronod.worker.WorkerPool`), with its settings as JSON in
the inherited descriptor ``SETTINGS_FD``. A module of its own, so that ``-m`` never runs a second
copy of :mod:`chronod.worker` as ``__main__``.
"""

from __future__ import annotations

import sys

from chronod.worker import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
