"""The Redis side of runs executed by another system (``Store.begin_external``/``end_external``).

A mixin of :class:`~chronod.store.redis.RedisStore` (whose module holds the rest of the contract):
each method is one script, ``begin_external.lua`` / ``end_external.lua``, documented there.
"""

from __future__ import annotations

import json

from chronod.instants import to_micros
from chronod.store._common import micros, output_tail
from chronod.store.base import EXTERNAL_TTL, AttemptResult, ExternalRun
from chronod.store.redis.scripts import ScriptRunner


class ExternalRuns(ScriptRunner):
    _history: int  # history entries kept per job (RedisStore's)

    def begin_external(self, run: ExternalRun) -> bool:
        key = self._keys.external(run.run_id, run.try_no)
        reply = self._pipelined(
            [("begin_external", [key], [run.executor, micros(EXTERNAL_TTL)])], wait=True
        )
        return bool(reply[0])

    def end_external(self, run: ExternalRun, result: AttemptResult) -> bool:
        fields = {
            "run_id": run.run_id,
            "job": run.job,
            "slot": str(to_micros(run.slot)),
            "manual": "0",
            "queue": run.queue,
            "digest": "",
            "epoch": str(run.epoch),
            "attempt": str(run.attempt),
            "max_attempts": str(run.attempt),
            "worker": run.executor,
        }
        extra: dict[str, str] = {"output": output_tail(result.output)}
        if result.exit_code is not None:
            extra["exit_code"] = str(result.exit_code)
        if result.error is not None:
            extra["error"] = result.error
        args: list[str | int] = [
            run.executor,
            json.dumps(fields),
            result.outcome.value,
            json.dumps(extra),
            self._history,
        ]
        key = self._keys.external(run.run_id, run.try_no)
        return bool(self._pipelined([("end_external", [key], args)], wait=True)[0])
