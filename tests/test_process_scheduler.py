"""``chronod run`` as real processes, on a SQLite file and on a private redis-server (issue 3).

Daemons run with ``--workers 0``: dispatched runs stay queued, so the store's live runs are exactly
what was dispatched, and (with ``overlap = "allow"``) every dispatched slot is one run. Everything
is judged through store reads (``leader``, ``live_runs``, ``history``, ``job_states``, the guards)
and the daemons' JSON logs; every wait is a polled deadline. Leases are 2 s to keep failovers short.

The crash test's seed is printed; rerun one with ``CHRONOD_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.config import load_config
from chronod.instants import format_utc
from chronod.store.base import JobState, JobSync, LeaderInfo, Outcome, RunRecord, Store
from chronod.store.keys import KeySpace
from chronod.tz import UTC
from tests.procs import ChronodProcess, Processes, hold_for, wait_until, write_atomically
from tests.targets import Target

pytestmark = pytest.mark.process

TTL = 2.0  # seconds: [chronod] lease in every config below
STARTUP = 30.0  # generous: a loaded 2-core CI machine can take seconds to import and connect
SECOND = timedelta(seconds=1)
NAMESPACE = "chronod"


# -- fixtures -------------------------------------------------------------------------------------


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
    return json.dumps(value)  # a TOML basic string for the ASCII values used here


def config_text(jobs: Mapping[str, Mapping[str, Any]], **defaults: Any) -> str:
    lines = [
        "[chronod]",
        f'lease = "{int(TTL)}s"',
        "",
        "[defaults]",
        'timezone = "UTC"',
        'overlap = "allow"',
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in defaults.items()]
    for name, body in jobs.items():
        lines += ["", f"[jobs.{name}]", 'command = "true"']
        lines += [f"{key} = {toml_value(value)}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


def write_config(directory: Path, jobs: Mapping[str, Mapping[str, Any]], **defaults: Any) -> Path:
    path = directory / "schedules.toml"
    write_atomically(path, config_text(jobs, **defaults))
    return path


# -- helpers --------------------------------------------------------------------------------------


def log_time(entry_ts: datetime | None) -> datetime:
    assert entry_ts is not None, "log line without a timestamp"
    return entry_ts


def leader_of(store: Store, *candidates: ChronodProcess) -> ChronodProcess:
    """Wait until the store names a leader, and return the candidate it names."""

    def look() -> LeaderInfo | None:
        if not any(p.alive() for p in candidates):
            tails = "\n".join(p.tail() for p in candidates)
            raise AssertionError(f"every candidate exited\n{tails}")
        return store.leader()

    info = wait_until(look, timeout=STARTUP, what="a leader in the store")
    by_node = {p.node: p for p in candidates}
    assert info.node in by_node, f"leader {info.node} is none of {sorted(by_node)}"
    return by_node[info.node]


def start_pair(
    procs: Processes, config: Path, target: Target, store: Store
) -> tuple[ChronodProcess, ChronodProcess]:
    """A leader (started first and confirmed) and a standby that is up and looking for the lease."""
    first = procs.run(config, target.url, name="first")
    first.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    second = procs.run(config, target.url, name="second")
    second.wait_for_log(r"^chronod starting", timeout=STARTUP)
    assert leader_of(store, first, second) is first
    return first, second


def after(instant: datetime) -> Callable[[], bool]:
    """A condition for :func:`wait_until`: the wall clock has reached ``instant``."""
    return lambda: datetime.now(UTC) >= instant


def slots_of(runs: list[RunRecord]) -> list[datetime]:
    return sorted(run.slot for run in runs)


def assert_unique_run_ids(records: list[RunRecord]) -> None:
    counts = Counter(r.run_id for r in records)
    twice = sorted(run_id for run_id, n in counts.items() if n > 1)
    assert not twice, f"slots dispatched more than once: {twice[:10]}"


def assert_every_second(slots: list[datetime], what: str) -> None:
    """``slots`` is each whole second from its first to its last, exactly once."""
    assert slots, f"no {what}"
    counts = Counter(slots)
    repeated = [format_utc(s) for s, n in counts.items() if n > 1]
    assert not repeated, f"{what}: repeated slots {repeated}"
    expected = [slots[0] + i * SECOND for i in range(int((slots[-1] - slots[0]) / SECOND) + 1)]
    missing = sorted(set(expected) - set(slots))
    assert not missing, f"{what}: slots never decided: {[format_utc(s) for s in missing]}"
    assert sorted(slots) == expected


def wait_for_run_after(store: Store, job: str, instant: datetime, timeout: float) -> None:
    wait_until(
        lambda: any(r.slot >= instant for r in store.live_runs(job)),
        timeout=timeout,
        what=f"a run of {job} with slot >= {format_utc(instant)}",
    )


def stop_all(*daemons: ChronodProcess) -> None:
    """SIGTERM (release the lease) and wait for a clean exit."""
    for daemon in daemons:
        daemon.term()
    for daemon in daemons:
        assert daemon.wait_exit(timeout=STARTUP) == 0, daemon.tail()


# -- (a) exactly one leader -----------------------------------------------------------------------


def test_two_daemons_on_one_store_exactly_one_leads(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"tick": {"every": "1s"}})
    # Started together: they race for the lease.
    a = procs.run(config, target.url, name="a")
    b = procs.run(config, target.url, name="b")
    leader = leader_of(store, a, b)
    standby = b if leader is a else a
    standby.wait_for_log(r"^chronod starting", timeout=STARTUP)
    wait_until(lambda: len(store.live_runs("tick")) >= 3, timeout=STARTUP, what="3 dispatches")

    info = store.leader()
    assert info is not None
    assert info.node == leader.node
    assert len(leader.find(r"^became leader")) == 1
    assert standby.find(r"^became leader") == []
    assert standby.find(r"^dispatched ") == []
    runs = store.live_runs("tick")
    assert {r.epoch for r in runs} == {info.epoch}
    assert_unique_run_ids(runs)
    assert_every_second(slots_of(runs), "dispatched slots")


# -- (b) SIGKILL failover -------------------------------------------------------------------------


def kill_and_take_over(
    first: ChronodProcess, second: ChronodProcess, store: Store
) -> tuple[float, datetime]:
    """SIGKILL ``first`` once it dispatched a little; return (failover seconds, takeover time)."""
    wait_until(lambda: len(store.live_runs("tick")) >= 2, timeout=STARTUP, what="2 dispatches")
    killed_at = first.kill()
    became = second.wait_for_log(r"^became leader", timeout=TTL + STARTUP)
    takeover = log_time(became.ts)
    failover = takeover.timestamp() - killed_at
    print(f"failover: SIGKILL -> standby 'became leader' in {failover:.3f} s (lease {TTL} s)")
    return failover, takeover


def test_sigkill_failover_within_ttl_and_gap_caught_up_within_grace(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"tick": {"every": "1s", "grace": "30s"}})
    first, second = start_pair(procs, config, target, store)
    failover, takeover = kill_and_take_over(first, second, store)
    assert failover <= TTL + 2.0
    wait_for_run_after(store, "tick", takeover + 2 * SECOND, timeout=STARTUP)
    stop_all(second)

    runs = store.live_runs("tick")
    assert_unique_run_ids(runs)
    assert_every_second(slots_of(runs), "dispatched slots")  # the gap included
    epochs = sorted({r.epoch for r in runs})
    assert len(epochs) == 2, epochs
    old = [r for r in runs if r.epoch == epochs[0]]
    new = [r for r in runs if r.epoch == epochs[1]]
    assert max(r.slot for r in old) < min(r.slot for r in new)
    # The gap's slots were dispatched late by the new leader (catch-up within grace) …
    assert any(
        r.slot < takeover and r.created_at - r.slot > timedelta(milliseconds=300) for r in new
    ), "no slot of the failover gap was caught up"
    # … and nothing was recorded missed.
    assert [h for h in store.history("tick", 1000) if h.state is Outcome.MISSED] == []
    assert store.job_states()["tick"].missed == 0
    for run in runs:
        assert target.guarded("tick", run.slot), f"no guard for {run.run_id}"


def test_sigkill_failover_gap_beyond_grace_is_recorded_missed(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    # A grace far below the failover gap (and catchup = none): the gap's slots are missed, the rest
    # run. (grace = 0 would make every slot missed: the dispatch is always a few ms late.)
    grace = timedelta(milliseconds=300)
    config = write_config(tmp_path, {"tick": {"every": "1s", "grace": "300ms", "catchup": "none"}})
    first, second = start_pair(procs, config, target, store)
    failover, takeover = kill_and_take_over(first, second, store)
    killed_at = takeover - timedelta(seconds=failover)
    assert failover <= TTL + 2.0
    wait_for_run_after(store, "tick", takeover + 2 * SECOND, timeout=STARTUP)
    stop_all(second)

    runs = store.live_runs("tick")
    missed = [h for h in store.history("tick", 1000) if h.state is Outcome.MISSED]
    assert_unique_run_ids(runs + missed)
    # Every slot of the window was decided exactly once: run or missed.
    assert_every_second(slots_of(runs + missed), "decided slots")
    # The slots of the gap that were late by more than grace when the standby took over: missed.
    margin = timedelta(milliseconds=200)
    gap = [s for s in slots_of(runs + missed) if killed_at + margin < s < takeover - grace - margin]
    assert gap, "the failover gap held no whole second (failover too fast for the scenario)"
    missed_slots = {h.slot for h in missed}
    assert set(gap) <= missed_slots, f"gap slots dispatched late: {set(gap) - missed_slots}"
    assert all(h.epoch > min(r.epoch for r in runs) for h in missed if h.slot in gap)
    state = store.job_states()["tick"]
    assert state.missed == len(missed)
    assert state.watermark is not None
    assert state.last_slot is not None
    assert state.watermark >= state.last_slot == max(r.slot for r in runs)


# -- (c) SIGSTOP past the TTL: fenced -------------------------------------------------------------


def stop_between_ticks(daemon: ChronodProcess, target: Target) -> float:
    """SIGSTOP ``daemon`` half-way between two whole seconds (between its ticks).

    A frozen SQLite process that holds the database's write lock (here: in a lease renewal) keeps
    it, since POSIX locks belong to the process, so nobody could take over until it resumed. That
    is a real SQLite limitation but not this scenario: such a stop is undone and tried again.
    """
    for _ in range(20):
        now = datetime.now(UTC)
        moment = now.replace(microsecond=0) + SECOND + timedelta(milliseconds=500)
        wait_until(after(moment), timeout=2.0, what="the middle of the next second", interval=0.001)
        stopped_at = daemon.stop()
        if target.write_lock_free():
            return stopped_at
        daemon.cont()
    raise AssertionError("could not freeze the leader outside a SQLite write transaction")


def test_sigstop_leader_is_fenced_steps_down_and_nothing_runs_twice(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    # The leader is frozen while idle (the next test freezes one in the middle of a tick).
    jobs = {"tick": {"every": "1s"}} | {f"job{i:03d}": {"every": "1s"} for i in range(50)}
    config = write_config(tmp_path, jobs, grace="30s")
    first, second = start_pair(procs, config, target, store)
    wait_until(lambda: len(store.live_runs("tick")) >= 2, timeout=STARTUP, what="2 dispatches")

    stopped_at = stop_between_ticks(first, target)
    became = second.wait_for_log(r"^became leader", timeout=TTL + STARTUP)
    takeover = log_time(became.ts)
    assert takeover.timestamp() - stopped_at <= TTL + 2.0
    wait_for_run_after(store, "tick", takeover + SECOND, timeout=STARTUP)
    resumed = first.last_index()
    first.cont()
    down = first.wait_for_log(r"^stepped down \(epoch \d+\)", timeout=STARTUP, after=resumed)
    # The main loop finds the lease gone (the keeper dropped it, or the store refused a write).
    reaction = first.wait_for_log(
        r"^(not leading|write refused by the store)", timeout=STARTUP, after=resumed
    )
    print(f"old leader after SIGCONT: {down.msg}; then: {reaction.msg}")
    # Both keep running for a while: the old leader stays a standby, the new one dispatches.
    wait_for_run_after(store, "tick", takeover + 3 * SECOND, timeout=STARTUP)
    info = store.leader()
    assert info is not None
    assert info.node == second.node
    assert first.find(r"^became leader", after=resumed) == []
    stop_all(first, second)

    runs = store.live_runs()
    assert_unique_run_ids(runs)
    for job in jobs:
        mine = [r for r in runs if r.job == job]
        assert_every_second(slots_of(mine), f"slots of {job}")
    epochs = sorted({r.epoch for r in runs})
    assert len(epochs) == 2, epochs
    old = [r for r in runs if r.epoch == epochs[0]]
    new = [r for r in runs if r.epoch == epochs[1]]
    assert max(r.slot for r in old) < min(r.slot for r in new)
    # Fencing: the store accepted nothing from the old epoch once the new lease existed.
    assert max(r.created_at for r in old) < takeover
    tick = [r for r in runs if r.job == "tick"]
    for run in tick:
        assert target.guarded("tick", run.slot), f"no guard for {run.run_id}"


SEEDED_JOBS = 300
SEEDED_BACKLOG = timedelta(seconds=120)  # with 300 jobs, planning the batch takes ~0.2 s


def seed_backlog(store: Store, config: Path) -> datetime:
    """Give every job of ``config`` state whose watermark lies SEEDED_BACKLOG in the past, so the
    first tick of a new leader plans and dispatches a large catch-up batch. Returns the watermark.
    """
    jobs = load_config(config).jobs
    lease = store.acquire_lease("seeder", "seeder-token", timedelta(seconds=30))
    assert lease is not None
    loaded_at = store.now().replace(microsecond=0) - SEEDED_BACKLOG
    syncs = [
        JobSync(name=j.name, fingerprint=j.fingerprint, next_due=j.schedule.next_after(loaded_at))
        for j in jobs.values()
    ]
    store.sync_jobs(lease, syncs, loaded_at)
    store.release_lease(lease)
    return loaded_at


def test_sigstop_in_the_middle_of_a_tick_the_resumed_dispatch_is_refused_by_the_store(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    # The leader is frozen after it took the lease and loaded the jobs, while it plans a large
    # catch-up batch: when it resumes, long after its lease expired and another daemon took over,
    # it sends that batch with its old lease. Only the store's fencing can refuse it.
    jobs = {f"job{i:03d}": {"every": "1s"} for i in range(SEEDED_JOBS)}
    config = write_config(tmp_path, jobs, grace="1h")
    watermark = seed_backlog(store, config)
    first = procs.run(config, target.url, name="first")
    loaded = first.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP, interval=0.002)
    first.stop()
    for _ in range(5):  # frozen in a lease renewal (SQLite keeps its lock): let it finish it
        if target.write_lock_free():
            break
        first.cont()
        wait_until(
            after(datetime.now(UTC) + 0.005 * SECOND), timeout=1, what="5 ms", interval=0.001
        )
        first.stop()
    assert target.write_lock_free(), "the leader froze inside a write transaction"
    assert store.live_runs() == [], "the leader dispatched before it could be frozen"
    lease_epoch = int(loaded.fields["epoch"])

    second = procs.run(config, target.url, name="second")
    second.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    caught_up = datetime.now(UTC)
    wait_until(
        lambda: all(
            s.watermark is not None and s.watermark >= caught_up
            for s in store.job_states().values()
        ),
        timeout=STARTUP,
        what="the new leader to catch the backlog up",
        interval=0.2,  # each look reads every job's state: do not compete with the daemon
    )
    resumed = first.last_index()
    first.cont()
    refused = first.wait_for_log(r"^write refused by the store", timeout=STARTUP, after=resumed)
    assert refused.fields.get("epoch") == lease_epoch
    first.wait_for_log(r"^stepped down \(epoch \d+\)", timeout=STARTUP, after=resumed)
    # The old leader stays a standby while the new one goes on dispatching.
    mark = datetime.now(UTC) + 2 * SECOND
    wait_until(
        lambda: all(
            s.watermark is not None and s.watermark >= mark for s in store.job_states().values()
        ),
        timeout=STARTUP,
        what="two more seconds of dispatches",
        interval=0.2,  # each look reads every job's state: do not compete with the daemon
    )
    info = store.leader()
    assert info is not None
    assert info.node == second.node
    assert first.find(r"^(became leader|dispatched )", after=resumed) == []
    stop_all(first, second)

    runs = store.live_runs()
    assert_unique_run_ids(runs)
    epochs = {r.epoch for r in runs}
    assert lease_epoch not in epochs, "a run was dispatched with the fenced lease"
    # One epoch: the new leader kept its lease through its own large catch-up.
    assert epochs == {info.epoch}, second.tail()
    for name in jobs:
        slots = slots_of([r for r in runs if r.job == name])
        assert slots[0] == watermark + SECOND  # the whole backlog, from the seeded watermark on
        assert_every_second(slots, f"slots of {name}")
    for run in runs[:: max(len(runs) // 200, 1)]:
        assert target.guarded(run.job, run.slot), f"no guard for {run.run_id}"


# -- (d) SIGHUP: edits never fire early; a broken file keeps the running config -------------------


def test_sighup_edit_to_a_time_already_passed_today_waits_for_the_next_occurrence(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    jobs: dict[str, dict[str, Any]] = {"edited": {"every": "1s"}, "steady": {"every": "1s"}}
    config = write_config(tmp_path, jobs)
    daemon = procs.run(config, target.url)
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    wait_until(lambda: len(store.live_runs("edited")) >= 2, timeout=STARTUP, what="2 dispatches")
    before = store.job_states()["edited"]

    # A fixed time three minutes ago (UTC, so no DST): today's occurrence has already passed.
    past = (datetime.now(UTC) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    jobs["edited"] = {"cron": f"{past.minute} {past.hour} * * *"}
    write_atomically(config, config_text(jobs))
    mark = daemon.last_index()
    daemon.hup()
    reloaded = log_time(daemon.wait_for_log(r"^config reloaded", timeout=STARTUP, after=mark).ts)
    loaded = daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP, after=mark)
    count_after_reload = len(store.live_runs("edited"))

    # For a while (the steady job proves the daemon keeps dispatching), nothing of "edited" runs.
    window_end = log_time(loaded.ts) + 3 * SECOND
    hold_for(
        lambda: len(store.live_runs("edited")) == count_after_reload,
        seconds=(window_end - datetime.now(UTC)).total_seconds(),
        what="no dispatch of edited",
    )
    wait_for_run_after(store, "steady", window_end, timeout=STARTUP)
    stop_all(daemon)

    edited = store.live_runs("edited")
    assert len(edited) == count_after_reload
    assert all(r.slot < reloaded for r in edited), "a slot after the edit was dispatched"
    assert past not in {r.slot for r in edited}
    assert store.history("edited", 1000) == [], "the edit caused a missed or skipped decision"
    state = store.job_states()["edited"]
    assert state.fingerprint != before.fingerprint
    assert state.next_due == past + timedelta(days=1)  # the new schedule's next occurrence
    assert state.watermark is not None
    assert state.watermark >= reloaded
    assert state.missed == 0
    steady = store.live_runs("steady")
    assert_every_second(slots_of(steady), "steady slots")  # the reload disturbed nothing else
    assert max(r.slot for r in steady) >= window_end


def test_sighup_with_a_broken_file_keeps_the_running_config(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    jobs = {"tick": {"every": "1s"}}
    config = write_config(tmp_path, jobs)
    daemon = procs.run(config, target.url)
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    wait_until(lambda: len(store.live_runs("tick")) >= 1, timeout=STARTUP, what="a dispatch")
    fingerprint = store.job_states()["tick"].fingerprint

    # A syntax error (located FILE:LINE:COL), then a semantic one (FILE: jobs.NAME.key: reason).
    broken = {
        "syntax": config_text(jobs) + "\n[jobs.oops\nevery = \n",
        "semantic": config_text(jobs | {"bad": {"every": "soon"}}),
    }
    located = {
        "syntax": rf"reload refused, keeping the running config: {config}:\d+:\d+: ",
        "semantic": rf"reload refused, keeping the running config: {config}: jobs\.bad\.every: ",
    }
    for kind, text in broken.items():
        write_atomically(config, text)
        mark = daemon.last_index()
        daemon.hup()
        refused = daemon.wait_for_log(located[kind], timeout=STARTUP, after=mark)
        assert refused.level == "error"
        assert daemon.find(r"^config reloaded", after=mark) == []
        # Still leading with the old config: the job keeps being dispatched.
        wait_for_run_after(store, "tick", log_time(refused.ts) + 2 * SECOND, timeout=STARTUP)
        assert daemon.alive()
    stop_all(daemon)
    runs = store.live_runs("tick")
    assert_every_second(slots_of(runs), "tick slots")
    assert {r.epoch for r in runs} == {runs[0].epoch}
    assert store.job_states()["tick"].fingerprint == fingerprint
    assert "bad" not in store.job_states()


# -- (e) crash loop -------------------------------------------------------------------------------


CRASH_ITERATIONS = 8
CRASH_JOBS = 150


def crash_jobs() -> dict[str, dict[str, Any]]:
    intervals = ("1s", "1s", "1s", "2s", "3s")
    return {f"j{i:03d}": {"every": intervals[i % len(intervals)]} for i in range(CRASH_JOBS)}


def test_sigkill_at_random_points_keeps_the_store_consistent_and_never_runs_a_slot_twice(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHRONOD_CRASH_SEED", random.randrange(1 << 32)))
    print(f"crash test seed: {seed} (rerun with CHRONOD_CRASH_SEED={seed})")
    rng = random.Random(seed)
    jobs = crash_jobs()
    # Every slot stays within grace however long the loop takes, so every slot must run: the
    # per-job slots must form an unbroken sequence, each exactly once.
    config = write_config(tmp_path, jobs, grace="1h", catchup="all")
    kills: list[str] = []
    for i in range(CRASH_ITERATIONS):
        daemon = procs.run(config, target.url, name=f"crash{i}")
        if i % 2 == 0:
            # Anywhere in the daemon's life: start-up, lease, sync, catch-up, steady dispatch.
            daemon.wait_for_log(r"^chronod starting", timeout=STARTUP)
            delay = rng.uniform(0.0, 1.0)
        else:
            # While it dispatches the catch-up of the previous crash's downtime.
            daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
            delay = rng.uniform(0.0, 0.25)
        moment = datetime.now(UTC) + timedelta(seconds=delay)
        wait_until(after(moment), timeout=delay + 1, what="the kill instant", interval=0.005)
        daemon.kill()
        kills.append(f"{daemon.name}: {delay:.3f}s, {len(daemon.find('^dispatched '))} logged")
        # The dead leader's lease would expire after TTL; expire it now rather than wait.
        target.expire_lease()
    print("kills:", "; ".join(kills))

    # A last, clean run must catch everything up: all slots up to its start are dispatched.
    final = procs.run(config, target.url, name="final")
    final.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    started = datetime.now(UTC)
    wait_until(
        lambda: all(
            s.watermark is not None and s.watermark >= started - 3 * SECOND
            for s in store.job_states().values()
        ),
        timeout=STARTUP,
        what="the final daemon to catch every job up",
        interval=0.2,  # each look reads every job's state: do not compete with the daemon
    )
    stop_all(final)

    if target.server is None:
        with closing(target._sqlite()) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            guards = conn.execute("SELECT count(*) FROM guards").fetchone()[0]
    else:
        client = target.server.client()
        keys = KeySpace(NAMESPACE)
        guards = sum(1 for _ in client.scan_iter(match=keys.prefix + "guard:*", count=1000))
        run_keys = sum(1 for _ in client.scan_iter(match=keys.prefix + "run:*", count=1000))
        assert run_keys == client.zcard(keys.live)
        assert client.xlen(keys.stream("default")) == run_keys  # one ticket per queued run
        assert all(keys.owns(k.decode()) for k in client.scan_iter(count=1000))

    runs = store.live_runs()
    history = [h for job in jobs for h in store.history(job, 10_000)]
    assert history == [], "nothing may be missed or skipped here"
    assert_unique_run_ids(runs)
    assert guards == len(runs)
    assert store.queue_depths() == {"default": len(runs)}
    states: dict[str, JobState] = store.job_states()
    assert set(states) == set(jobs)
    for name, body in jobs.items():
        mine = [r for r in runs if r.job == name]
        slots = slots_of(mine)
        step = timedelta(seconds=int(body["every"].rstrip("s")))
        assert slots, f"{name} never ran"
        gaps = [(a, b) for a, b in itertools.pairwise(slots) if b - a != step]
        assert not gaps, f"{name}: slots skipped or repeated: {gaps[:3]}"
        state = states[name]
        assert state.last_slot == slots[-1]
        assert state.watermark is not None
        assert state.watermark >= state.last_slot
        assert state.active == len(mine)
        assert state.next_due is not None
        assert state.next_due > state.last_slot
    for run in rng.sample(runs, min(200, len(runs))):
        assert target.guarded(run.job, run.slot), f"no guard for {run.run_id}"
