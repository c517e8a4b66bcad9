"""Workers as real processes (issue 4): ``chronod run`` + ``chronod worker``, on both stores.

Topology: a scheduler (``chronod run --workers 0``, which only dispatches) and one or more
``chronod worker`` pools; ``chronod run --workers N`` where the embedded pool is the point. Jobs are
shell commands (or a ``call`` of :func:`tests.procs.record_run`) that append what they saw (run id,
attempt, pid, time) to files under the test's directory. Tests judge through those files, the
store (live runs, history) and the processes' JSON logs; every wait is a polled deadline.

Single-run scenarios use a one-slot job (``every = "1s"`` with ``start = end = SLOT``, SLOT a
second in the past) whose state the test seeds with a watermark just before the slot: the leader
dispatches it as catch-up (within ``grace``) the moment it loads, so no test waits for a wall-clock
instant.

Attempt leases: a worker's attempt lease is ``[chronod] attempt_lease`` (default 30 s). The tests
that need a lease to lapse (SIGKILL, SIGSTOP) expire it in the store, as if its TTL had passed, the
same way the scheduler's process tests expire a dead leader's lease. Everything after that (the reap
at the next claim, the stale worker's refused finish) is the product's own behaviour.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.config import load_config
from chronod.instants import format_utc
from chronod.store import StoreSettings, open_store
from chronod.store.base import JobSync, Outcome, RunRecord, Store
from chronod.tz import UTC
from tests.procs import (
    ChronodProcess,
    LogEntry,
    Processes,
    child_pids,
    group_members,
    pid_alive,
    process_state,
    signal_pid,
    wait_for_event,
    wait_until,
    worker_pid,
    write_atomically,
)
from tests.targets import Target

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, pidfds and PR_SET_PDEATHSIG"),
]

STARTUP = 30.0  # generous: a loaded 2-core CI machine can take seconds to import and connect
SETTLE = 30.0  # a run that is under way reaches its end (or a worker notices something) within
SECOND = timedelta(seconds=1)
NAMESPACE = "chronod"
HOST = socket.gethostname()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def job_groups() -> Iterator[list[int]]:
    """Process groups of job runs a test saw: SIGKILLed at teardown, should a run have escaped
    its worker (the failure some tests look for), so that nothing outlives the test."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def store(target: Target) -> Iterator[Store]:
    opened = target.open()
    yield opened
    opened.close()


# -- config ---------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def config_text(jobs: Mapping[str, Mapping[str, Any]], **daemon: Any) -> str:
    lines = ["[chronod]", 'lease = "2s"']
    lines += [f"{key} = {toml_value(value)}" for key, value in daemon.items()]
    lines += ["", "[defaults]", 'timezone = "UTC"']
    for name, body in jobs.items():
        lines += ["", f"[jobs.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


def write_config(directory: Path, jobs: Mapping[str, Mapping[str, Any]], **daemon: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "schedules.toml"
    write_atomically(path, config_text(jobs, **daemon))
    return path


def q(path: Path) -> str:
    return shlex.quote(str(path))


def last_second() -> datetime:
    """The last whole second before now: the slot of a one-slot job."""
    return datetime.now(UTC).replace(microsecond=0) - SECOND


def one_slot(slot: datetime, **body: Any) -> dict[str, Any]:
    """A job whose only slot is ``slot`` (dispatched late, within grace, once seeded)."""
    return {"every": "1s", "start": format_utc(slot), "end": format_utc(slot), "grace": "1h"} | body


def seed(store: Store, config: Path, watermark: datetime) -> None:
    """Give every job of ``config`` state with ``watermark``: the first leader to load then
    dispatches every slot after it (within grace) at once, instead of treating the jobs as new
    (a new job's watermark is its load instant, so nothing before that would run)."""
    jobs = load_config(config).jobs
    lease = store.acquire_lease("seeder", "seeder-token", timedelta(seconds=30))
    assert lease is not None
    syncs = [
        JobSync(name=j.name, fingerprint=j.fingerprint, next_due=j.schedule.next_after(watermark))
        for j in jobs.values()
    ]
    store.sync_jobs(lease, syncs, watermark)
    store.release_lease(lease)


# -- helpers --------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[list[str]]:
    """The complete lines of a job's output file, split into words."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]


def scheduler(procs: Processes, config: Path, target: Target, workers: int = 0) -> ChronodProcess:
    return procs.run(config, target.url, workers=workers, name="scheduler")


def started_entry(worker: ChronodProcess, run_id: str | None = None) -> LogEntry:
    fields: dict[str, Any] = {} if run_id is None else {"run_id": run_id}
    return wait_for_event(worker, r"^started$", timeout=STARTUP, **fields)


def finished_entry(worker: ChronodProcess, run_id: str, after: int = -1) -> LogEntry:
    return wait_for_event(worker, r"^finished$", timeout=SETTLE, after=after, run_id=run_id)


def history_of(store: Store, job: str) -> list[RunRecord]:
    return store.history(job, 1000)


def wait_for_history(
    store: Store, job: str, count: int, timeout: float = SETTLE
) -> list[RunRecord]:
    def found() -> list[RunRecord] | None:
        entries = history_of(store, job)
        return entries if len(entries) >= count else None

    return wait_until(
        found,
        timeout=timeout,
        what=f"{count} history entries of {job}",
    )


def freeze(pid: int, target: Target) -> None:
    """SIGSTOP ``pid``, outside a SQLite write transaction.

    A frozen process keeps the POSIX lock of a SQLite write transaction it was in (here: a
    registration right after a run started), which would stall every other process: that is a
    SQLite property, not this scenario, so such a stop is undone and tried again.
    """
    for _ in range(200):
        signal_pid(pid, signal.SIGSTOP)
        wait_until(lambda: process_state(pid) == "T", timeout=5, what=f"{pid} to stop")
        if target.write_lock_free():
            return
        signal_pid(pid, signal.SIGCONT)
        # A short back-off (not synchronisation: the next pass checks the condition again) lets
        # the process finish its transaction before the next try.
        time.sleep(0.005)
    raise AssertionError(f"could not freeze {pid} outside a SQLite write transaction")


def stop(process: ChronodProcess, timeout: float = STARTUP) -> None:
    """SIGTERM and a clean exit."""
    process.term()
    code = process.wait_exit(timeout=timeout)
    assert code == 0, process.tail()


def assert_consecutive(slots: list[datetime], what: str) -> None:
    """``slots`` holds every whole second from its first to its last, each once."""
    assert slots, f"no {what}"
    repeated = sorted(format_utc(s) for s, n in Counter(slots).items() if n > 1)
    assert not repeated, f"{what}: repeated {repeated}"
    ordered = sorted(slots)
    expected = [
        ordered[0] + i * SECOND for i in range(int((ordered[-1] - ordered[0]) / SECOND) + 1)
    ]
    missing = [format_utc(s) for s in sorted(set(expected) - set(ordered))]
    assert not missing, f"{what}: missing {missing}"


# -- 1. every slot exactly once -------------------------------------------------------------------


WINDOW = 8  # slots of each 1-second job that must have run


def test_each_slot_of_one_second_jobs_runs_exactly_once_across_pools(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    shell_file, call_file = tmp_path / "shell-runs", tmp_path / "call-runs"
    jobs: dict[str, dict[str, Any]] = {
        "shell": {
            "every": "1s",
            "overlap": "allow",
            "command": f'echo "$CHRONOD_RUN_ID" >> {q(shell_file)}',
        },
        "py": {
            "every": "1s",
            "overlap": "allow",
            "call": "tests.procs:record_run",
            "args": [str(call_file)],
        },
    }
    config = write_config(tmp_path, jobs)
    # Four consumers compete for every run: the scheduler's embedded pool of two, and a pool of two.
    daemon = scheduler(procs, config, target, workers=2)
    pool = procs.worker(config, target.url, concurrency=2, name="pool")
    for job in jobs:
        wait_for_history(store, job, WINDOW, timeout=STARTUP + WINDOW + 5)
    stop(daemon)  # no more dispatches; its pool drains
    wait_until(lambda: store.live_runs() == [], timeout=SETTLE, what="every queued run to end")
    stop(pool)

    for job, path in (("shell", shell_file), ("py", call_file)):
        history = history_of(store, job)
        assert {h.state for h in history} == {Outcome.SUCCEEDED}, [h.error for h in history]
        assert all(h.attempt == 1 for h in history)
        ids = Counter(h.run_id for h in history)
        assert max(ids.values()) == 1, (
            f"{job}: recorded twice: {[i for i, n in ids.items() if n > 1]}"
        )
        assert_consecutive([h.slot for h in history], f"{job} slots")
        ran = Counter(words[0] for words in read_lines(path))
        assert max(ran.values()) == 1, (
            f"{job} executed twice: {[i for i, n in ran.items() if n > 1]}"
        )
        assert set(ran) == set(ids), f"{job}: executed {sorted(set(ran) ^ set(ids))} differently"
        assert len(ids) >= WINDOW
    workers = {h.worker for job in jobs for h in history_of(store, job)}
    print(f"{sum(len(history_of(store, j)) for j in jobs)} runs on {len(workers)} worker processes")


# -- 1b. the embedded pool: every child serves ----------------------------------------------------


EMBEDDED_STARTS = 6
EMBEDDED_WORKERS = 4


def embedded_pool_serves(procs: Processes, config: Path, url: str, name: str) -> None:
    """Start ``chronod run --workers N`` on ``url``; every child of its pool must register."""
    daemon = procs.run(config, url, workers=EMBEDDED_WORKERS, name=name)
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)

    def children() -> list[int] | None:
        found = child_pids(daemon.pid)
        return found if len(found) == EMBEDDED_WORKERS else None

    expected = {f"{HOST}:{pid}" for pid in wait_until(children, timeout=STARTUP, what="children")}
    with open_store(StoreSettings(url=url, config_dir=config.parent)) as reader:

        def registered() -> set[str]:
            return {w.worker for w in reader.workers()} & expected

        wait_until(
            lambda: registered() == expected,
            timeout=10,
            what=f"{name}: all {EMBEDDED_WORKERS} embedded workers to register",
            context=lambda: (
                f"registered {sorted(registered())} of {sorted(expected)}\n" + daemon.tail()
            ),
        )
    stop(daemon)


def test_run_with_embedded_workers_every_child_serves_from_the_first_start(
    target: Target, procs: Processes, tmp_path: Path
) -> None:
    """``chronod run --workers N`` forks its pool while its lease keeper thread is already busy
    in the store: every child must still get working store access of its own. Started a few
    times on a fresh store (the first start creates the database), since the race is a matter of
    timing; a child that registers with the store has made its first store write."""
    config = write_config(tmp_path, {"idle": {"every": "1h", "command": "true"}})
    for attempt in range(EMBEDDED_STARTS):
        url = target.url
        if target.server is None:
            url = f"sqlite://{tmp_path / f'state{attempt}' / 'chronod.db'}"
        target.reset()
        embedded_pool_serves(procs, config, url, f"start{attempt}")


def test_run_with_embedded_workers_survives_signals_back_to_back(
    procs: Processes, tmp_path: Path
) -> None:
    """Children of a pool exit together at stop, and their SIGCHLDs come back to back. A signal
    handler that takes a lock (``Event.set``) deadlocked when the next signal came while the
    handler, or the loop's own ``Event.wait``, held it: ``chronod run --workers 4`` then hung at
    stop with part of its pool reaped and ignored SIGTERM. A burst of SIGCHLDs (one store: the
    handlers do not depend on it) must leave it stopping cleanly."""
    config = write_config(tmp_path, {"idle": {"every": "1h", "command": "true"}})
    url = f"sqlite://{tmp_path / 'state' / 'chronod.db'}"
    daemon = procs.run(config, url, workers=EMBEDDED_WORKERS)
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    sent, until = 0, time.monotonic() + 2.0
    while time.monotonic() < until and daemon.alive():
        signal_pid(daemon.pid, signal.SIGCHLD)
        sent += 1
    assert daemon.alive(), f"died after {sent} SIGCHLDs\n" + daemon.tail()
    stop(daemon)
    assert "Traceback" not in daemon.log_path.read_text()
    assert len(daemon.find(r"^worker child exited$")) == EMBEDDED_WORKERS


# -- 2. SIGKILL mid-run ---------------------------------------------------------------------------


def test_sigkill_a_worker_mid_run_the_run_completes_once_on_another_worker(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    lines = tmp_path / "lines"
    slot = last_second()
    body = one_slot(
        slot,
        command=f'echo "$CHRONOD_RUN_ID $CHRONOD_ATTEMPT $$ start" >> {q(lines)}; sleep 2; '
        f'echo "$CHRONOD_RUN_ID $CHRONOD_ATTEMPT $$ done" >> {q(lines)}',
        retries=1,  # a worker's death spends the attempt it was running (with none left: lost)
    )
    config = write_config(tmp_path, {"slow": body})
    seed(store, config, slot - SECOND)
    run_id = f"slow@{format_utc(slot)}"
    a = procs.worker(config, target.url, concurrency=1, name="a")
    scheduler(procs, config, target)
    started = started_entry(a, run_id)
    assert started.fields["attempt"] == 1
    first = wait_until(lambda: read_lines(lines), timeout=SETTLE, what="the job to start")
    job_pid = int(first[0][2])
    b = procs.worker(config, target.url, concurrency=1, name="b")  # started now: A has the run
    b.wait_for_log(r"^worker started", timeout=STARTUP)

    a.kill_group()  # the supervisor and its children: the whole worker is gone, mid-run
    # The run's process dies with its worker (PR_SET_PDEATHSIG), it does not run on unsupervised.
    wait_until(lambda: not pid_alive(job_pid), timeout=10, what="the job to die with its worker")
    target.expire_attempt(run_id)  # as if the dead worker's attempt lease had run out

    done = finished_entry(b, run_id)
    assert (done.fields["outcome"], done.fields["status"], done.fields["attempt"]) == (
        "succeeded",
        "accepted",
        2,
    )
    again = started_entry(b, run_id)
    history = history_of(store, "slow")
    assert [(h.run_id, h.state, h.attempt, h.worker) for h in history] == [
        (run_id, Outcome.SUCCEEDED, 2, again.fields["worker"])
    ]
    assert store.live_runs() == []
    assert a.find(r"^finished$") == []
    words = read_lines(lines)
    assert [w[1:2] + w[3:] for w in words] == [["1", "start"], ["2", "start"], ["2", "done"]]
    assert {w[0] for w in words} == {run_id}


# -- 3. SIGSTOP past the attempt lease ------------------------------------------------------------


def test_sigstop_a_worker_past_its_lease_its_late_finish_is_refused(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    lines = tmp_path / "lines"
    slot = last_second()
    body = one_slot(
        slot,
        command=f'echo "$CHRONOD_RUN_ID $CHRONOD_ATTEMPT start" >> {q(lines)}; sleep 2; '
        f'echo "$CHRONOD_RUN_ID $CHRONOD_ATTEMPT done" >> {q(lines)}',
        retries=1,  # the reclaimed attempt is spent: the run needs a second one
    )
    config = write_config(tmp_path, {"slow": body})
    seed(store, config, slot - SECOND)
    run_id = f"slow@{format_utc(slot)}"
    a = procs.worker(config, target.url, concurrency=1, name="a")
    scheduler(procs, config, target)
    child = worker_pid(started_entry(a, run_id))
    # Frozen at once, while its job runs (2 s): had B's start-up come first, a loaded machine
    # could let A record the result before the freeze, and there would be nothing to reclaim.
    freeze(child, target)  # A's worker child stalls; its job goes on and ends meanwhile
    target.expire_attempt(run_id)  # its attempt lease runs out while it is frozen
    b = procs.worker(config, target.url, concurrency=1, name="b")  # reaps and claims the run
    done = finished_entry(b, run_id)
    assert (done.fields["outcome"], done.fields["status"], done.fields["attempt"]) == (
        "succeeded",
        "accepted",
        2,
    )
    wait_until(
        lambda: len([w for w in read_lines(lines) if w[2] == "done"]) == 2,
        timeout=SETTLE,
        what="both attempts' jobs to end",
    )
    accepted = history_of(store, "slow")

    resumed = a.last_index()
    signal_pid(child, signal.SIGCONT)
    # The stale worker's result is refused: by the store at finish (the usual case, its job has
    # ended) or, had a heartbeat fallen due first, by the refused heartbeat.
    refused = a.wait_for_log(
        r"^(result refused: the attempt was reclaimed|attempt lease lost)",
        timeout=SETTLE,
        after=resumed,
    )
    assert refused.fields.get("run_id") == run_id
    if refused.msg.startswith("result refused"):
        late = finished_entry(a, run_id, after=resumed)
        assert (late.fields["status"], late.fields["attempt"]) == ("stale", 1)
    # Nothing changed in the store: exactly one accepted result for the slot, the second attempt's.
    history = history_of(store, "slow")
    assert history == accepted
    assert [(h.run_id, h.state, h.attempt) for h in history] == [(run_id, Outcome.SUCCEEDED, 2)]
    assert history[0].worker == started_entry(b, run_id).fields["worker"]
    assert store.live_runs() == []
    assert a.find(r"^worker child died") == [], "the resumed worker must go on serving"


# -- 4. timeout kills the whole group -------------------------------------------------------------


def test_timeout_kills_the_job_and_its_children(
    target: Target, store: Store, procs: Processes, tmp_path: Path, job_groups: list[int]
) -> None:
    main_pid, child_pid = tmp_path / "main.pid", tmp_path / "child.pid"
    slot = last_second()
    # The job and its background child ignore SIGTERM: only the SIGKILL after kill_grace ends them.
    command = (
        f"trap '' TERM; sh -c 'echo $$ > {q(child_pid)}; exec sleep 300' & "
        f"echo $$ > {q(main_pid)}; sleep 300"
    )
    body = one_slot(slot, command=command, timeout="1s", kill_grace="1s")
    config = write_config(tmp_path, {"hang": body})
    seed(store, config, slot - SECOND)
    run_id = f"hang@{format_utc(slot)}"
    worker = procs.worker(config, target.url, concurrency=1)
    scheduler(procs, config, target)
    started_entry(worker, run_id)

    def written() -> list[int] | None:
        found = [read_lines(p) for p in (main_pid, child_pid)]
        return [int(words[0][0]) for words in found] if all(found) else None

    pids = wait_until(
        written,
        timeout=SETTLE,
        what="the job and its child to write their pids",
    )
    job_groups.append(pids[0])  # the job leads its own group (and session)
    assert all(pid_alive(pid) for pid in pids)
    # The job, its foreground sleep and its background child.
    wait_until(lambda: len(group_members(pids[0])) == 3, timeout=SETTLE, what="3 job processes")

    done = finished_entry(worker, run_id)
    assert (done.fields["outcome"], done.fields["status"]) == ("timed-out", "accepted")
    for pid in pids:
        assert not pid_alive(pid), f"pid {pid} survived the timeout ({process_state(pid)})"
    assert group_members(pids[0]) == [], "a process of the job's group survived the timeout"
    [record] = history_of(store, "hang")
    assert record.state is Outcome.TIMED_OUT
    assert record.exit_code == 128 + signal.SIGKILL
    assert record.error is not None
    assert "timed out after 1s" in record.error
    assert "SIGTERM, then SIGKILL after 1s" in record.error
    assert record.duration is not None
    assert record.duration >= timedelta(seconds=2)  # timeout + kill_grace


# -- 5. retries with growing delays ---------------------------------------------------------------


def test_retries_give_three_attempts_with_growing_delays(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    slot = last_second()
    command = f'echo "$CHRONOD_RUN_ID $CHRONOD_ATTEMPT $(date +%s.%N)" >> {q(attempts)}; exit 3'
    body = one_slot(slot, command=command, retries=2, retry_delay="1s")
    config = write_config(tmp_path, {"flaky": body})
    seed(store, config, slot - SECOND)
    run_id = f"flaky@{format_utc(slot)}"
    worker = procs.worker(config, target.url, concurrency=2)
    scheduler(procs, config, target)
    wait_for_history(store, "flaky", 3)
    wait_until(lambda: store.live_runs() == [], timeout=SETTLE, what="the run to end")

    assert [(h.run_id, h.state, h.attempt, h.exit_code) for h in history_of(store, "flaky")] == [
        (run_id, Outcome.FAILED, n, 3) for n in (3, 2, 1)
    ]
    # The worker logs "finished" just after its store write: a loaded machine may let the test
    # see the history before the log line.
    wait_until(
        lambda: len(worker.find(r"^finished$")) >= 3, timeout=SETTLE, what="the third 'finished'"
    )
    statuses = [e.fields["status"] for e in worker.find(r"^finished$")]
    assert statuses == ["retry", "retry", "accepted"]
    words = read_lines(attempts)
    assert [w[:2] for w in words] == [[run_id, "1"], [run_id, "2"], [run_id, "3"]]
    times = [float(w[2]) for w in words]
    gap1, gap2 = times[1] - times[0], times[2] - times[1]
    print(f"retry gaps: {gap1:.3f} s, {gap2:.3f} s (retry_delay 1s, jitter ±15 %)")
    # Delays 1 s and 2 s, each ±15 %: the second is longer than the first whatever the jitter.
    assert 0.85 <= gap1 < 1.15 + 1.0
    assert 1.7 <= gap2 < 2.3 + 1.0
    assert gap2 > gap1
    starts = sorted(h.started_at for h in history_of(store, "flaky") if h.started_at)
    assert len(starts) == 3
    assert starts[2] - starts[1] > starts[1] - starts[0]


# -- 6. overlap = "skip" --------------------------------------------------------------------------


def test_overlap_skip_records_skipped_slots_and_never_runs_two_at_once(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "executions"
    command = (
        f'echo "$CHRONOD_RUN_ID start $(date +%s.%N)" >> {q(log)}; sleep 1.5; '
        f'echo "$CHRONOD_RUN_ID end $(date +%s.%N)" >> {q(log)}'
    )
    config = write_config(
        tmp_path, {"long": {"every": "1s", "overlap": "skip", "command": command}}
    )
    daemon = scheduler(procs, config, target)
    # Two pools of two: four consumers that could run slots side by side if overlap let them.
    pools = [procs.worker(config, target.url, concurrency=2, name=n) for n in ("a", "b")]

    def enough() -> bool:
        outcomes = Counter(h.state for h in history_of(store, "long"))
        return outcomes[Outcome.SUCCEEDED] >= 3 and outcomes[Outcome.SKIPPED] >= 2

    wait_until(enough, timeout=STARTUP + 10, what="3 runs and 2 skipped slots")
    stop(daemon)
    wait_until(lambda: store.live_runs() == [], timeout=SETTLE, what="the last run to end")
    for pool in pools:
        stop(pool)

    history = history_of(store, "long")
    ran = [h for h in history if h.state is Outcome.SUCCEEDED]
    skipped = [h for h in history if h.state is Outcome.SKIPPED]
    assert len(ran) + len(skipped) == len(history), [h.state for h in history]
    assert_consecutive([h.slot for h in history], "decided slots")  # each slot: run or skipped
    executions: dict[str, dict[str, float]] = {}
    for run_id, what, at in read_lines(log):
        assert what not in executions.setdefault(run_id, {}), f"{run_id} {what} twice"
        executions[run_id][what] = float(at)
    assert set(executions) == {h.run_id for h in ran}
    assert not {h.run_id for h in skipped} & set(executions)
    spans = sorted((e["start"], e["end"]) for e in executions.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"overlapping executions: one started {end - start:.3f} s early"


# -- 7. config drift: refuse, never execute -------------------------------------------------------


def test_a_worker_with_another_definition_refuses_with_config_mismatch(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    marks = {name: tmp_path / f"{name}.mark" for name in ("changed", "worker-changed", "unknown")}
    slot = last_second()
    dispatched = {
        "changed": one_slot(slot, command=f"touch {q(marks['changed'])}"),
        "unknown": one_slot(slot, command=f"touch {q(marks['unknown'])}"),
    }
    config = write_config(tmp_path, dispatched)
    # This worker's own file: "changed" runs another command; "unknown" does not exist there.
    theirs = write_config(
        tmp_path / "worker",
        {
            "changed": one_slot(slot, command=f"touch {q(marks['worker-changed'])}"),
            "other": {"every": "1h", "command": "true"},
        },
    )
    seed(store, config, slot - SECOND)
    worker = procs.worker(theirs, target.url, concurrency=1)
    scheduler(procs, config, target)

    for name in dispatched:
        [record] = wait_for_history(store, name, 1)
        assert record.state is Outcome.CONFIG_MISMATCH, record
        assert record.run_id == f"{name}@{format_utc(slot)}"
        assert record.error is not None
        assert f"job {name!r}" in record.error
        assert f"host {HOST}" in record.error
        refusal = wait_for_event(worker, r"^refused: ", timeout=SETTLE, run_id=record.run_id)
        assert refusal.fields["outcome"] == "config-mismatch"
    reasons = {name: history_of(store, name)[0].error or "" for name in dispatched}
    assert "definition differs" in reasons["changed"]
    assert "not defined in this worker's config" in reasons["unknown"]
    assert worker.find(r"^started$") == []
    assert [m.name for m in marks.values() if m.exists()] == [], "a refused command ran"


# -- 8. SIGTERM drains ----------------------------------------------------------------------------


def test_sigterm_during_a_run_drains_it(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    lines = tmp_path / "lines"
    slot = last_second()
    body = one_slot(
        slot,
        command=f'echo "$CHRONOD_ATTEMPT start" >> {q(lines)}; sleep 1.5; '
        f'echo "$CHRONOD_ATTEMPT done" >> {q(lines)}',
    )
    config = write_config(tmp_path, {"job": body}, drain_timeout="20s")
    seed(store, config, slot - SECOND)
    run_id = f"job@{format_utc(slot)}"
    worker = procs.worker(config, target.url, concurrency=1)
    scheduler(procs, config, target)
    child = worker_pid(started_entry(worker, run_id))

    worker.term()
    asked = time.monotonic()
    assert ["1", "done"] not in read_lines(lines), "the run ended before SIGTERM: nothing to drain"
    assert worker.wait_exit(timeout=SETTLE) == 0, worker.tail()
    drained_in = time.monotonic() - asked
    done = finished_entry(worker, run_id)
    assert (done.fields["outcome"], done.fields["status"]) == ("succeeded", "accepted")
    assert drained_in < 20, f"drain took {drained_in:.1f} s"
    assert worker.find(r"^(run stopped|handed back)") == []
    [record] = history_of(store, "job")
    assert (record.state, record.attempt, record.worker) == (
        Outcome.SUCCEEDED,
        1,
        f"{HOST}:{child}",
    )
    assert read_lines(lines) == [["1", "start"], ["1", "done"]]


def test_sigterm_with_a_run_longer_than_drain_timeout_hands_it_back(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    lines = tmp_path / "lines"
    slot = last_second()
    body = one_slot(
        slot,
        command=f'echo "$CHRONOD_ATTEMPT $$ start" >> {q(lines)}; sleep 2; '
        f'echo "$CHRONOD_ATTEMPT $$ done" >> {q(lines)}',
    )
    config = write_config(tmp_path, {"job": body}, drain_timeout="500ms")
    seed(store, config, slot - SECOND)
    run_id = f"job@{format_utc(slot)}"
    a = procs.worker(config, target.url, concurrency=1, name="a")
    scheduler(procs, config, target)
    started_entry(a, run_id)
    first = wait_until(lambda: read_lines(lines), timeout=SETTLE, what="the job to start")
    b = procs.worker(config, target.url, concurrency=1, name="b")  # started now: A has the run
    b.wait_for_log(r"^worker started", timeout=STARTUP)

    a.term()
    stopped = wait_for_event(a, r"^run stopped: interrupted", timeout=SETTLE, allow_exit=True)
    assert stopped.fields["run_id"] == run_id
    wait_for_event(a, r"^handed back$", timeout=SETTLE, allow_exit=True, run_id=run_id)
    assert a.wait_exit(timeout=SETTLE) == 0, a.tail()
    assert not pid_alive(int(first[0][1])), "the interrupted job outlived its worker"

    done = finished_entry(b, run_id)
    assert (done.fields["outcome"], done.fields["status"]) == ("succeeded", "accepted")
    [record] = history_of(store, "job")
    # Handed back: the interrupted attempt is not spent; the run succeeds on its first "real" one.
    assert (record.state, record.attempt) == (Outcome.SUCCEEDED, 1)
    assert record.worker == started_entry(b, run_id).fields["worker"]
    assert a.find(r"^finished$") == []
    assert [w[0:1] + w[2:] for w in read_lines(lines)] == [
        ["1", "start"],
        ["1", "start"],
        ["1", "done"],
    ]
