"""``after`` and ``when``: jobs that run after other jobs (docs/schedules.md, "Chains").

A job with ``after`` has no schedule of its own (:class:`~chronod.schedules.after.AfterSchedule`
has no fires), so the keys that shape slots are refused on it; the store starts its runs when an
upstream run ends (:meth:`~chronod.store.base.Store.set_chains`). Which links the leader gives
the store (:func:`chain_links`) and the checks over the whole file (unknown upstreams, cycles)
are here too.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from chronod.config.model import JobConfig
from chronod.config.parsers import JOB_NAME, clip
from chronod.schedules.after import AfterSchedule
from chronod.store.records import ChainLink, When
from chronod.tz import Zone

Error = Callable[[str, str], None]

WHENS: tuple[When, ...] = ("succeeded", "failed", "finished")
MAX_UPSTREAMS = 100
# Keys that shape a job's own slots: a job with 'after' has none, so they are refused on it
# ([defaults] values of them do not apply to it, and are not refused). The keys of one kind
# (anchor, the solar keys) are refused as on any job of another kind.
NOT_WITH_AFTER = (
    "start",
    "end",
    "jitter",
    "exclude",
    "exclude_file",
    "grace",
    "catchup",
    "catchup_limit",
)


def parse_after(value: Any) -> tuple[str, ...]:
    """A job name, or a non-empty array of distinct job names."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or len(names) > MAX_UPSTREAMS:
        raise ValueError(
            f"expected a job name or an array of 1 to {MAX_UPSTREAMS} job names like "
            '["extract", "fetch"]'
        )
    for index, name in enumerate(names, 1):
        if not isinstance(name, str) or JOB_NAME.match(name) is None:
            where = "" if isinstance(value, str) else f"item {index}: "
            raise ValueError(f"{where}expected a job name (letters, digits, '_', '.', '-')")
    if len(set(names)) != len(names):
        raise ValueError("names a job twice")
    return tuple(names)


def parse_when(value: Any) -> When:
    if value not in WHENS:
        raise ValueError(f"expected one of {', '.join(repr(w) for w in WHENS)}")
    return cast("When", value)


def after_schedule(
    body: Mapping[str, Any],
    key: Callable[[str], str],
    zone: Zone | None,
    get: Callable[[str, Any, Callable[[Any], Any]], Any],
    error: Error,
) -> AfterSchedule | None:
    """The schedule of a job with ``after`` (``body``; ``key`` locates its keys); None after
    reporting a mistake."""
    for name in NOT_WITH_AFTER:
        if name in body:
            error(key(name), "does not apply to a job with 'after' (it has no slots of its own)")
    upstreams = get(key("after"), body["after"], parse_after)
    when: When | None = "succeeded"
    if "when" in body:
        when = get(key("when"), body["when"], parse_when)
    if upstreams is None or when is None or zone is None:
        return None
    return AfterSchedule(upstreams, when, zone)


def check_links(tables: Mapping[str, Any], error: Error) -> None:
    """Over the whole file: each upstream names a job of the file, and no job follows itself
    through any chain (each cycle reported once, named ``a → b → a``, at its first job)."""
    graph: dict[str, tuple[str, ...]] = {}
    for name, body in tables.items():
        if isinstance(body, dict) and "after" in body:
            try:
                graph[name] = parse_after(body["after"])
            except ValueError:
                continue  # reported with the job
    for name, upstreams in graph.items():
        for upstream in upstreams:
            if upstream not in tables:
                hint = difflib.get_close_matches(upstream, list(tables), n=1, cutoff=0.6)
                extra = f"; did you mean '{hint[0]}'?" if hint else ""
                error(f"jobs.{clip(name)}.after", f"no job named '{upstream}'{extra}")
    for cycle in _cycles(graph):
        error(f"jobs.{cycle[0]}.after", f"a cycle: {' → '.join((*cycle, cycle[0]))}")


def _cycles(graph: Mapping[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """One cycle through each strongly connected part of ``graph`` that has one (iterative: a
    file may chain thousands of jobs), each starting at its smallest name."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[tuple[str, ...]] = []
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                start = cycle.index(min(cycle))
                found.append(tuple(cycle[start:] + cycle[:start]))
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(graph[nxt]))
    return sorted(set(found))


def chain_links(jobs: Mapping[str, JobConfig]) -> list[ChainLink]:
    """What the leader tells the store (Store.set_chains): one link per job and upstream."""
    links = []
    for job in jobs.values():
        schedule = job.schedule
        if isinstance(schedule, AfterSchedule):
            links += [
                ChainLink(
                    job=job.name,
                    upstream=upstream,
                    when=schedule.when,
                    queue=job.queue,
                    digest=job.digest,
                    overlap=job.overlap,
                    max_attempts=job.max_attempts,
                )
                for upstream in schedule.upstreams
                if upstream in jobs
            ]
    return links
