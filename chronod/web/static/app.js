// chronod web: renders the JSON API (/api/v1/) into the page and polls it. Plain JS, no build step.
// Every text from the API goes in through textContent, never innerHTML: job output is untrusted.
"use strict";

(function () {
  const VIEW = document.body.dataset.view;
  const JOB = document.body.dataset.job;
  const ACTIONS = document.body.dataset.actions === "on";
  const POLL_MS = 5000;
  const TOKEN_KEY = "chronod.web-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HOUR = 3600e3;
  const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  const state = { hours: 24, zone: "job", timeline: null, jobs: null, historyKey: "", open: new Set(), timer: 0, stale: false };

  // ---------------------------------------------------------------------------------------------
  // small helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    node.append(...children.filter(Boolean));
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
  }

  function tip(text) {
    return svg("title", { text });
  }

  const ms = (iso) => (iso ? Date.parse(iso) : null);
  const pad = (n) => String(n).padStart(2, "0");

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${Number.isInteger(seconds) || seconds >= 10 ? Math.round(seconds) : seconds.toFixed(1)}s`;
    const s = Math.round(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    const parts = [[d, "d"], [h, "h"], [m, "m"], [r, "s"]].filter(([n]) => n > 0);
    return parts.slice(0, 2).map(([n, u]) => `${n}${u}`).join(" ");
  }

  function relative(targetMs, nowMs) {
    const delta = (targetMs - nowMs) / 1000;
    if (Math.abs(delta) < 1) return "now";
    return delta > 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
  }

  const WALL = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)/;

  // "2026-11-27T17:30:00+01:00" (a wall time with its offset, as the API sends "local" fields),
  // 24-hour like everything else. Seconds are shown when asked for, or when they are not zero.
  function wallText(iso, withSeconds) {
    const m = WALL.exec(iso || "");
    if (!m) return iso || "–";
    const day = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])).getUTCDay();
    const time = withSeconds || m[6] !== "00" ? `${m[4]}:${m[5]}:${m[6]}` : `${m[4]}:${m[5]}`;
    return `${DAYS[day]} ${m[1]}-${m[2]}-${m[3]} ${time}`;
  }

  // A column shows seconds on every row once one of its times has them: 17:30:00 under 17:29:45,
  // not a ragged 17:30.
  function anySeconds(isos) {
    return isos.some((iso) => {
      const m = WALL.exec(iso || "");
      return Boolean(m) && m[6] !== "00";
    });
  }

  function clockNow() {
    const d = new Date();
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // The jobs that run next: the earliest next fire among the jobs that will run (not paused).
  function nextUp(jobs) {
    let first = Infinity;
    for (const job of jobs) if (job.next_fire && !job.paused) first = Math.min(first, ms(job.next_fire));
    return new Set(jobs.filter((j) => j.next_fire && !j.paused && ms(j.next_fire) === first).map((j) => j.job));
  }

  function offsetText(iso) {
    const m = /([+-]\d\d:\d\d|Z)$/.exec(iso || "");
    return m ? (m[1] === "Z" ? "UTC" : m[1]) : "";
  }

  // The offset spans the API sends for a zone, looked up by instant: labels without a tz database.
  function spanAt(offsets, t) {
    for (const span of offsets) if (t < ms(span.end)) return span;
    return offsets[offsets.length - 1];
  }

  function wall(offsets, t) {
    const span = spanAt(offsets, t);
    return { date: new Date(t + span.offset_s * 1000), abbr: span.abbreviation };
  }

  function clock(offsets, t) {
    const w = wall(offsets, t);
    return `${pad(w.date.getUTCHours())}:${pad(w.date.getUTCMinutes())} ${w.abbr}`;
  }

  function dayText(date) {
    return `${DAYS[date.getUTCDay()]} ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]}`;
  }

  function badge(text, cls) {
    return el("span", { class: `badge ${cls || text}`, text });
  }

  // ---------------------------------------------------------------------------------------------
  // API, token and actions

  async function api(path, options) {
    const response = await fetch(path, { cache: "no-store", ...options });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = { error: `HTTP ${response.status}` };
    }
    if (!response.ok) {
      const error = new Error(data && data.error ? data.error : `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function post(path, secret) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${secret}` },
      body: "{}",
    });
  }

  function showLock() {
    $("readonly").hidden = ACTIONS;
    const button = $("lock");
    button.hidden = !ACTIONS;
    const unlocked = Boolean(token());
    button.textContent = unlocked ? "Lock actions" : "Unlock actions";
    button.classList.toggle("unlocked", unlocked);
  }

  // Resolves true once a token the server accepts is stored, false when the user cancels.
  function askToken() {
    const dialog = $("token-dialog"), form = $("token-form"), input = $("token-input");
    const error = $("token-error");
    input.value = "";
    error.hidden = true;
    return new Promise((resolve) => {
      const finish = (ok) => {
        form.removeEventListener("submit", submit);
        $("token-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        dialog.close();
        showLock();
        resolve(ok);
      };
      const submit = async (event) => {
        event.preventDefault();
        try {
          await post("/api/v1/auth", input.value);
          sessionStorage.setItem(TOKEN_KEY, input.value);
          finish(true);
        } catch (e) {
          error.textContent = e.message;
          error.hidden = false;
        }
      };
      const cancel = (event) => {
        event.preventDefault();
        finish(false);
      };
      form.addEventListener("submit", submit);
      $("token-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
      input.focus();
    });
  }

  async function act(job, action) {
    if (!token() && !(await askToken())) return;
    try {
      const result = await post(`/api/v1/jobs/${encodeURIComponent(job)}/${action}`, token());
      banner(actionText(job, action, result), "ok");
    } catch (e) {
      if (e.status === 403) sessionStorage.removeItem(TOKEN_KEY);
      banner(`${action} ${job}: ${e.message}`, "error");
      showLock();
    }
    refresh();
  }

  function actionText(job, action, result) {
    if (action === "trigger") {
      const where = result.run.state === "waiting" ? "waiting behind the active run" : "queued";
      return `triggered ${job}: run ${result.run.run_id} ${where}`;
    }
    if (!result.changed) return `${job} was already ${action === "pause" ? "paused" : "running"}`;
    return action === "pause" ? `paused ${job}` : `resumed ${job}`;
  }

  // Nothing at all when there is nothing to do: a read-only page has no actions to mark missing.
  function actionButtons(job) {
    if (!ACTIONS || job.retired) return null;
    const button = (action, label) => {
      const node = el("button", { type: "button", "data-action": action, "data-job": job.job, text: label });
      node.addEventListener("click", () => act(job.job, action));
      return node;
    };
    return el(
      "div",
      { class: "acts" },
      button("trigger", "Trigger"),
      job.paused ? button("resume", "Resume") : button("pause", "Pause"),
    );
  }

  let bannerTimer = 0;
  function banner(text, kind) {
    const node = $("banner");
    clearTimeout(bannerTimer);
    if (!text) {
      node.hidden = true;
      return;
    }
    node.textContent = text;
    node.className = `banner ${kind || ""}`;
    node.hidden = false;
    if (kind === "ok") bannerTimer = setTimeout(() => (node.hidden = true), 8000);
  }

  // ---------------------------------------------------------------------------------------------
  // overview: cluster panel, jobs table

  function renderCluster(status) {
    $("store").textContent = status.store;
    const leader = status.leader;
    $("leader").textContent = leader ? leader.node : "none";
    $("leader").classList.toggle("none", !leader);
    $("leader-sub").textContent = leader
      ? `epoch ${leader.epoch} · lease ${duration(leader.lease_left_s)} left`
      : "no scheduler holds the lease: nothing is being dispatched";
    const workers = status.workers.map((w) =>
      el(
        "tr",
        { "data-worker": w.worker },
        el("td", { text: w.worker }),
        el("td", { class: "muted", text: w.queues.join(", ") }),
        el("td", { class: "num", text: `seen ${duration(w.age_s)} ago` }),
        el("td", { class: "num", text: `${w.running}/${w.concurrency} busy` }),
      ),
    );
    if (!workers.length) workers.push(el("tr", {}, el("td", { class: "none", text: "none seen in the last minute" })));
    $("workers").tBodies[0].replaceChildren(...workers);
    const queues = Object.entries(status.queues).map(([name, depth]) =>
      el("tr", {}, el("td", { text: name }), el("td", { class: "num", text: `${depth} queued` })),
    );
    $("queues").tBodies[0].replaceChildren(...queues);
    renderChannels(status);
  }

  // Each notification channel's last delivery and error (docs/notifications.md), the outbox.
  function renderChannels(status) {
    const notes = status.notifications || { channels: [], outbox: null };
    $("channels-card").hidden = !notes.channels.length;
    const now = ms(status.now);
    const ago = (at) => (at ? `${duration((now - ms(at)) / 1000)} ago` : "never");
    const rows = notes.channels.map((c) =>
      el(
        "tr",
        { "data-channel": c.channel },
        el("td", { text: c.channel }),
        el("td", { class: "num", text: `ok ${ago(c.last_ok_at)}` }),
        el("td", { class: c.last_error ? "error-text" : "muted", text: c.last_error ? `${ago(c.last_error_at)}: ${c.last_error}` : "no error" }),
      ),
    );
    $("channels").tBodies[0].replaceChildren(...rows);
    $("outbox").textContent = notes.outbox
      ? `outbox: ${notes.outbox.depth} waiting, ${notes.outbox.dropped} dropped when full`
      : "";
  }

  function renderJobs(data) {
    const now = ms(data.now);
    const seconds = anySeconds(data.jobs.map((job) => job.next_fire_local));
    const next = nextUp(data.jobs);
    const rows = data.jobs.map((job) =>
      el(
        "tr",
        { "data-job": job.job, "data-next": job.next_fire, "data-paused": job.paused, class: next.has(job.job) ? "next-up" : null },
        el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(job.job)}`, text: job.job }),
          job.description ? el("div", { class: "sub", text: job.description }) : null),
        el("td", {}, ...scheduleNodes(job), job.timezone ? el("span", { class: "muted", text: `, ${job.timezone}` }) : null),
        nextCell(job, now, seconds, next.has(job.job)),
        lastCell(job, now),
        rateCell(job.stats),
        el("td", { class: "state" }, stateBadge(job)),
        el("td", { class: "act-col" }, actionButtons(job)),
      ),
    );
    labelCells($("jobs"), rows);
    $("jobs").tBodies[0].replaceChildren(...rows);
    document.querySelectorAll(".act-col").forEach((c) => (c.hidden = !ACTIONS));
  }

  // On a phone, rows become cards and each cell shows its column's name (CSS: td::before).
  function labelCells(table, rows) {
    const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
    for (const row of rows) [...row.cells].forEach((cell, i) => cell.setAttribute("data-label", names[i] || ""));
  }

  function nextCell(job, now, seconds, first) {
    if (!job.next_fire) return el("td", { class: "muted", text: job.retired ? "–" : "no upcoming fires" });
    return el(
      "td",
      { class: "when" },
      wallText(job.next_fire_local, seconds),
      first ? el("span", { class: "badge next", title: "the next job to run", text: "next" }) : null,
      el("div", { class: "sub", text: `${relative(ms(job.next_fire), now)} · ${offsetText(job.next_fire_local)}` }),
      job.next_fire_note ? el("div", { class: "note", text: job.next_fire_note }) : null,
      job.paused ? el("div", { class: "sub", text: "passes without running while paused" }) : null,
    );
  }

  function lastCell(job, now) {
    if (!job.last_outcome) return el("td", { class: "muted", text: "–" });
    const run = job.last_run;
    let why = null;
    if (run && run.outcome && run.outcome !== "succeeded") {
      const text = run.error || (run.exit_code !== null ? `exit code ${run.exit_code}` : "");
      if (text) why = el("div", { class: "error-text", text });
    }
    return el(
      "td",
      {},
      badge(job.last_outcome),
      el("span", { class: "sub", text: ` ${relative(ms(job.last_outcome_at), now)}` }),
      why,
    );
  }

  function rateCell(stats) {
    if (!stats || stats.success_rate === null) return el("td", { class: "opt muted", text: "–" });
    const pct = Math.round(stats.success_rate * 1000) / 10;
    const bar = el("span", { class: "bar" }, el("i"));
    bar.firstChild.style.width = `${pct}%`; // CSSOM, not a style attribute: allowed by the CSP
    return el(
      "td",
      { class: "opt", title: Object.entries(stats.outcomes).map(([k, v]) => `${k}: ${v}`).join(", ") },
      el("span", { class: "rate" }, bar, `${pct}%`),
      el("div", { class: "sub", text: `of ${stats.ran} run${stats.ran === 1 ? "" : "s"}` }),
    );
  }

  // A job with 'after' links to the jobs it follows: "after extract (succeeded)".
  function scheduleNodes(job) {
    if (!job.after || !job.after.length) return [job.schedule || "(retired)"];
    const nodes = ["after "];
    job.after.forEach((name, i) => {
      if (i) nodes.push(", ");
      nodes.push(el("a", { class: "after-link", href: `/jobs/${encodeURIComponent(name)}`, text: name }));
    });
    nodes.push(` (${job.when})`);
    return nodes;
  }

  function stateBadge(job) {
    if (job.retired) return badge("retired", "manual");
    if (job.paused) return badge("paused");
    if (job.active) return badge(`${job.active} active`, "active");
    const idle = job.after && job.after.length ? "follows" : "scheduled";
    return el("span", { class: "muted", text: job.loaded ? idle : "not loaded yet" });
  }

  // ---------------------------------------------------------------------------------------------
  // timeline (inline SVG)

  function renderTimeline(data) {
    const box = $("timeline");
    if (!data) return;
    // Drawn at the box's own width, never scaled down: on a phone the text keeps its size.
    const W = Math.max(box.clientWidth, 200);
    const narrow = W < 640;
    const L = narrow ? 104 : 180, R = 14, AXIS = narrow ? 30 : 26, ROW = narrow ? 34 : 30;
    const start = ms(data.start), end = ms(data.end), at = ms(data.at);
    const x = (t) => L + ((Math.min(Math.max(t, start), end) - start) / (end - start)) * (W - L - R);
    const height = AXIS + data.jobs.length * ROW + 4;
    const root = svg("svg", {
      id: "timeline-svg", class: narrow ? "narrow" : null, width: W, height, viewBox: `0 0 ${W} ${height}`, role: "img",
      "aria-label": "timeline of fires and runs", "data-start": data.start, "data-end": data.end,
      "data-at": data.at, "data-zone": data.zone,
    });
    root.append(svg("defs", {}, svg("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "hatch-line" }))));
    const axisOffsets = axisZone(data);
    root.append(axis(data, axisOffsets, { x, start, end, W, L, AXIS, height, narrow }));
    const jobs = new Map(((state.jobs && state.jobs.jobs) || []).map((j) => [j.job, j]));
    const next = nextUp([...jobs.values()]);
    data.jobs.forEach((job, i) =>
      root.append(row(job, i, { x, start, end, at, W, L, AXIS, ROW, narrow, info: jobs.get(job.job), next: next.has(job.job) })));
    root.append(svg("line", { class: "now-line", x1: x(at), x2: x(at), y1: AXIS - 6, y2: height }));
    if (!data.jobs.length) root.append(svg("text", { x: L, y: AXIS + 18, text: "no jobs configured" }));
    box.replaceChildren(root);
  }

  // Labels on the shared axis: UTC, the jobs' zone when they share one, else hours from now.
  function axisZone(data) {
    if (!data.jobs.length) return null;
    const zones = new Set(data.jobs.map((j) => (data.zone === "utc" ? "UTC" : j.timezone)));
    return zones.size === 1 ? data.jobs[0].offsets : null;
  }

  // As many tick labels as fit the plot's width without touching (at the text sizes in use).
  function tickStep(spanHours, plotWidth, narrow) {
    const steps = [1, 3, 6, 12, 24, 48];
    const labels = Math.max(2, Math.floor(plotWidth / (narrow ? 50 : 90)));
    const wanted = spanHours / labels;
    return (steps.find((s) => s >= wanted) || 48) * HOUR;
  }

  function axis(data, offsets, g) {
    const group = svg("g", { class: "axis" });
    const step = tickStep((g.end - g.start) / HOUR, g.W - g.L - 14, g.narrow);
    const at = ms(data.at);
    const pinned = Math.abs(at - ms(data.now)) > 60e3; // ?at= looks back or ahead
    const nowLabel = pinned ? `${data.at.slice(0, 16).replace("T", " ")}Z` : "now";
    g = { ...g, keepClear: [g.x(at) - 30, g.x(at) + 7 * nowLabel.length] }; // no tick label there
    if (offsets) {
      const first = wall(offsets, g.start);
      let w = Math.ceil(first.date.getTime() / step) * step; // wall-clock multiple of the step
      for (let guard = 0; guard < 400; guard++) {
        const t = w - spanAt(offsets, w - spanAt(offsets, g.start).offset_s * 1000).offset_s * 1000;
        if (t > g.end) break;
        const d = new Date(w);
        const midnight = d.getUTCHours() === 0 && d.getUTCMinutes() === 0;
        const label = step >= 24 * HOUR || midnight ? dayText(d) : `${pad(d.getUTCHours())}:00`;
        tick(group, g, g.x(t), label, midnight);
        w += step;
      }
      const abbr = spanAt(offsets, g.start).abbreviation;
      group.append(svg("text", { class: "zone-label", x: 4, y: 16, text: data.zone === "utc" ? "UTC" : `job zone (${abbr})` }));
    } else {
      for (let t = at - Math.floor((at - g.start) / step) * step; t <= g.end; t += step) {
        if (t !== at) tick(group, g, g.x(t), `${t > at ? "+" : "−"}${Math.abs(t - at) / HOUR}h`, false);
      }
      group.append(svg("text", { class: "zone-label", x: 4, y: 16, text: pinned ? "hours from then" : "hours from now" }));
    }
    group.append(svg("text", { class: "now-text", x: g.x(at) + 3, y: 16, text: nowLabel }));
    return group;
  }

  function tick(group, g, px, label, strong) {
    if (px < g.L || px > g.W - 2) return;
    group.append(svg("line", { class: strong ? "day-line" : "grid-line", x1: px, x2: px, y1: g.AXIS - 4, y2: g.height }));
    const clear = g.keepClear && px > g.keepClear[0] && px < g.keepClear[1];
    if (px < g.W - 30 && !clear) group.append(svg("text", { x: px + 3, y: g.AXIS - 8, text: label }));
  }

  function row(job, i, g) {
    const y = g.AXIS + i * g.ROW, mid = y + g.ROW / 2;
    const classes = `row${job.paused ? " paused-row" : ""}${g.next ? " next-up" : ""}`;
    const group = svg("g", { class: classes, "data-job": job.job, "data-fires": job.fires.length });
    if (i % 2 === 0) group.append(svg("rect", { class: "rowbg", x: 0, y, width: g.W, height: g.ROW }));
    const room = g.narrow ? 11 : 22, short = g.narrow ? 6 : 15; // label characters that fit
    const limit = job.paused ? short : room;
    const name = job.job.length > limit ? `${job.job.slice(0, limit - 1)}…` : job.job;
    group.append(svg("a", { href: `/jobs/${encodeURIComponent(job.job)}` },
      svg("text", { class: `label${job.paused ? " paused" : ""}`, x: 6, y: mid + 4, text: name },
        tip(`${job.job}: ${job.schedule} (${job.timezone})${job.paused ? " · paused" : ""}`))));
    if (job.paused) group.append(svg("text", { class: "paused-tag", x: g.L - 8, y: mid + 4, "text-anchor": "end", text: "paused" }));
    for (const days of job.skipped_days) group.append(skipBand(days, y, g));
    job.offsets.slice(1).forEach((span, k) => group.append(dstLine(job.offsets[k], span, y, g)));
    for (const run of job.runs) group.append(runMark(run, mid, g, job.offsets));
    group.append(fireMarks(job, y, g));
    if (!job.fires.length) group.append(beyond(job, mid, g));
    return group;
  }

  // A row without a fire in view says when the job fires next, instead of staying blank.
  function beyond(job, mid, g) {
    const info = g.info;
    if (!info || (info.next_fire && ms(info.next_fire) <= g.end)) return svg("g", {});
    let text = "no upcoming fires";
    if (info.next_fire) {
      const when = wallText(info.next_fire_local); // "Mon 2026-12-07 09:00"
      text = g.narrow ? `next ${when.slice(9)} →` : `fires next ${when} ${offsetText(info.next_fire_local)} →`;
    }
    return svg("text", { class: "beyond-text", x: g.W - 8, y: mid + 4, "text-anchor": "end", "data-beyond": info ? info.next_fire : "", text },
      tip(`${job.job}: ${text}`));
  }

  function skipBand(days, y, g) {
    const x1 = g.x(ms(days.start)), x2 = g.x(ms(days.end));
    const span = days.first === days.last ? days.first : `${days.first} … ${days.last}`;
    const band = svg("g", { class: "skip", "data-first": days.first, "data-last": days.last },
      svg("rect", { class: "skipped-days", x: x1, y: y + 4, width: Math.max(x2 - x1, 1), height: g.ROW - 8 },
        tip(days.note || `no event ${span}`)));
    if (x2 - x1 > 70) band.append(svg("text", { class: "skip-text", x: x1 + 4, y: y + g.ROW / 2 + 4, text: `no event · ${span}` }));
    return band;
  }

  function dstLine(before, after, y, g) {
    const px = g.x(ms(after.start));
    const text = `${before.abbreviation}→${after.abbreviation}`;
    return svg("g", { class: "dst" },
      svg("line", { class: "dst-shift", x1: px, x2: px, y1: y + 2, y2: y + g.ROW - 2 }, tip(`offset change: ${text}`)),
      svg("text", { class: "dst-text", x: px + 3, y: y + 10, text }));
  }

  function runMark(run, mid, g, offsets) {
    const cls = run.outcome || run.state;
    const slot = ms(run.slot);
    const group = svg("g", { class: `run ${cls}`, "data-run-id": run.run_id });
    const text = [
      `${run.job}${run.manual ? " (manual)" : ""} · slot ${clock(offsets, slot)}`,
      `${cls}${run.duration_s !== null ? ` in ${duration(run.duration_s)}` : ""}`,
      run.worker ? `on ${run.worker}, attempt ${run.attempt}` : null,
      run.exit_code !== null ? `exit ${run.exit_code}` : null,
      run.error,
    ].filter(Boolean).join("\n");
    if (run.started_at) {
      const x1 = g.x(ms(run.started_at)), x2 = g.x(run.finished_at ? ms(run.finished_at) : ms(run.started_at) + Math.max(0, Date.now() - ms(run.started_at)));
      group.append(svg("rect", { class: `run-bar ${cls}`, x: x1, y: mid - 3, width: Math.max(x2 - x1, 2), height: 6, rx: 2 }, tip(text)));
    }
    group.append(svg("circle", { class: `run-dot ${cls}`, cx: g.x(slot), cy: mid, r: 4 }, tip(text)));
    return group;
  }

  function fireMarks(job, y, g) {
    const group = svg("g", { class: "fires" });
    const plot = g.W - g.L - 14;
    if (!job.fires.length) return group;
    if (job.more_fires || job.fires.length > plot / 4) {
      // Too many to tell apart: one band, with the count and the spacing in its tooltip.
      const first = ms(job.fires[0].utc);
      const last = job.more_fires ? g.end : ms(job.fires[job.fires.length - 1].utc);
      const every = job.fires.length > 1 ? (ms(job.fires[1].utc) - first) / 1000 : 0;
      const count = `${job.fires.length}${job.more_fires ? "+" : ""} fires`;
      const label = `${every ? `every ${duration(every)} · ` : ""}${count}`;
      group.append(svg("rect", { class: "dense", x: g.x(first), y: y + 9, width: Math.max(g.x(last) - g.x(first), 2), height: g.ROW - 18, "data-count": count },
        tip(`${job.job}: ${label} in view`)));
      if (g.x(last) - g.x(first) > 140) group.append(svg("text", { class: "dense-text", x: g.x(first) + 6, y: y + g.ROW / 2 + 4, text: label }));
      return group;
    }
    job.fires.forEach((fire, k) => {
      const px = g.x(ms(fire.utc));
      const text = `${job.job} · ${wallText(fire.local)} ${offsetText(fire.local)} · ${fire.utc.slice(11, 19)} UTC${fire.note ? `\n${fire.note}` : ""}`;
      const cls = k === 0 && g.next && ms(fire.utc) >= g.at ? "fire first" : "fire";
      group.append(svg("line", { class: cls, x1: px, x2: px, y1: y + 7, y2: y + g.ROW - 7, "data-utc": fire.utc }, tip(text)));
      if (fire.note) {
        const mid = y + g.ROW / 2;
        group.append(svg("path", { class: "noted", d: `M${px} ${mid - 7}l6 7l-6 7l-6 -7z`, "data-note": fire.note }, tip(fire.note)));
      }
      const next = job.fires[k + 1];
      const room = (next ? g.x(ms(next.utc)) : g.W) - px;
      if (k === 0 && room > 80 && px < g.W - 80) {
        group.append(svg("text", { class: "next-text", x: px + 5, y: y + g.ROW / 2 + 4, text: clock(job.offsets, ms(fire.utc)) }));
      }
    });
    return group;
  }

  // ---------------------------------------------------------------------------------------------
  // job page

  function renderJob(job) {
    $("job-schedule").replaceChildren(...(job.schedule ? [...scheduleNodes(job), `, ${job.timezone}`] : ["retired: no longer in the config"]));
    const parts = [];
    if (job.description) parts.push(job.description);
    if (job.stats && job.stats.success_rate !== null) {
      parts.push(`${Math.round(job.stats.success_rate * 1000) / 10}% succeeded of ${job.stats.ran} runs kept`);
    }
    parts.push(`queue ${job.queue || "–"}`);
    const summary = $("job-summary");
    summary.replaceChildren(job.paused ? badge("paused") : "", job.paused ? " " : "", parts.join(" · "));
    $("job-actions").replaceChildren(...[actionButtons(job)].filter(Boolean));
    const seconds = anySeconds((job.upcoming || []).map((f) => f.at));
    const items = (job.upcoming || []).map((f) =>
      el("li", { "data-utc": f.utc }, `${wallText(f.at, seconds)} ${offsetText(f.at)}`,
        el("span", { class: "muted", text: ` · ${f.utc.replace("T", " ").replace("Z", " UTC")}` }),
        f.note ? el("div", { class: "note", text: f.note }) : null),
    );
    if (!items.length) items.push(el("li", { class: "muted", text: "no upcoming fires" }));
    $("job-upcoming").replaceChildren(...items);
  }

  function renderHistory(data) {
    const runs = [...data.live.slice().reverse(), ...data.runs];
    const key = JSON.stringify(runs);
    if (key === state.historyKey) return; // unchanged: keep open outputs and any selection
    state.historyKey = key;
    const rows = [];
    const seconds = anySeconds(runs.map((run) => run.slot_local));
    for (const run of runs) rows.push(...historyRows(run, seconds));
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: 7, text: "no runs recorded yet" })));
    labelCells($("history"), rows.filter((r) => r.classList.contains("run")));
    $("history").tBodies[0].replaceChildren(...rows);
    $("history-sub").textContent = `newest first · slots in ${data.timezone}`;
  }

  function historyRows(run, seconds) {
    const cls = run.outcome || run.state;
    const rowKey = `${run.run_id}#${run.attempt}#${run.finished_at}`;
    const main = el(
      "tr",
      { class: "run", "data-run-id": run.run_id, "data-manual": run.manual, "data-outcome": cls },
      el("td", { class: "when", title: run.slot }, wallText(run.slot_local, seconds), " ",
        el("span", { class: "muted", text: offsetText(run.slot_local) }), run.manual ? " " : null,
        run.manual ? badge("manual") : null),
      el("td", { class: "num", text: `${run.attempt}/${run.max_attempts}` }),
      el("td", {}, badge(cls)),
      el("td", { class: "worker", text: run.worker || "–" }),
      el("td", { class: "num", text: duration(run.duration_s) }),
      el("td", { class: "num", text: run.exit_code === null ? "–" : String(run.exit_code) }),
      el("td", { class: "opt when", title: run.finished_at || "", text: run.finished_local ? wallText(run.finished_local, true) : "–" }),
    );
    const out = (run.output || "").replace(/\n$/, "");
    if (!out && !run.error) return [main];
    const lines = out ? out.split("\n").length : 0;
    const details = el("details", {},
      el("summary", { text: out ? `output tail (${lines} line${lines === 1 ? "" : "s"})` : "no output" }),
      out ? el("pre", { class: "output", text: out }) : null);
    details.open = state.open.has(rowKey);
    details.addEventListener("toggle", () => (details.open ? state.open.add(rowKey) : state.open.delete(rowKey)));
    const cell = el("td", { colspan: 7, class: "outrow" },
      run.error ? el("div", { class: "error-text", text: run.error }) : null, details);
    return [main, el("tr", { class: "out" }, cell)];
  }

  // ---------------------------------------------------------------------------------------------
  // polling

  async function loadOverview() {
    // ?at=ISO on the page's own address pins the timeline to that instant (a look back or ahead).
    const pinned = new URLSearchParams(location.search).get("at");
    const q = `hours=${state.hours}&zone=${state.zone}${pinned ? `&at=${encodeURIComponent(pinned)}` : ""}`;
    const [status, jobs, timeline] = await Promise.all([
      api("/api/v1/status"), api("/api/v1/jobs"), api(`/api/v1/timeline?${q}`),
    ]);
    renderCluster(status);
    renderJobs(jobs);
    state.jobs = jobs;
    state.timeline = timeline;
    renderTimeline(timeline);
    return status;
  }

  async function loadJob() {
    const name = encodeURIComponent(JOB);
    const [status, job, history] = await Promise.all([
      api("/api/v1/status"), api(`/api/v1/jobs/${name}`), api(`/api/v1/jobs/${name}/history?limit=100`),
    ]);
    $("store").textContent = status.store;
    renderJob(job);
    renderHistory(history);
    return status;
  }

  async function refresh() {
    clearTimeout(state.timer);
    const live = $("live");
    try {
      const status = await (VIEW === "job" ? loadJob() : loadOverview());
      live.textContent = `live · ${clockNow()}`;
      live.className = "live ok";
      if (status.config_stale !== state.stale) {
        state.stale = status.config_stale;
        banner(state.stale ? "schedules.toml changed but is invalid: showing the last good config (run 'chronod check')" : "", "error");
      }
    } catch (e) {
      if (e.status === 404 && VIEW === "job") {
        $("job-schedule").textContent = e.message; // a job that is not (or no longer) there
        live.textContent = "live";
        live.className = "live ok";
      } else {
        live.textContent = `offline · ${e.message}`;
        live.className = "live bad";
        live.title = e.message;
      }
    }
    if (!document.hidden) state.timer = setTimeout(refresh, POLL_MS);
  }

  function segmented(id, attr, apply) {
    $(id).addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button) return;
      for (const b of $(id).querySelectorAll("button")) b.classList.toggle("on", b === button);
      apply(button.dataset[attr]);
      refresh();
    });
  }

  function start() {
    showLock();
    $("lock").addEventListener("click", () => {
      if (token()) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLock();
      } else {
        askToken();
      }
    });
    if (VIEW === "overview") {
      segmented("range", "hours", (v) => (state.hours = Number(v)));
      segmented("zone", "zone", (v) => (state.zone = v));
      // Redrawn when the box's width changes: a window resize, or a scroll bar appearing once the
      // page is filled in (drawn wider than its box, the timeline would be scaled down).
      let resizeTimer = 0, drawnWidth = 0;
      new ResizeObserver(() => {
        const width = $("timeline").clientWidth;
        if (width === drawnWidth) return;
        drawnWidth = width;
        clearTimeout(resizeTimer);
        resizeTimer = setTimeout(() => renderTimeline(state.timeline), 50);
      }).observe($("timeline"));
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    refresh();
  }

  start();
})();
