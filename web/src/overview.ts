// The overview: live through WatchDashboard (operator keys): health, queues with small charts
// of their recent figures, workers, performance windows, and pause/resume per queue.
import { admin, aborted, describe, type Role } from "./api.js";
import { facts, h, ms, notice, sparkline, table, usd } from "./dom.js";
import type { Dashboard } from "./gen/llmjobs/v1/admin_pb.js";

/** Seconds between dashboard updates. */
const INTERVAL_SECONDS = 2;
/** Samples kept per chart: the last hour at INTERVAL_SECONDS. */
const HISTORY = 3600 / INTERVAL_SECONDS;

type Series = { throughput: number[]; waitMs: number[]; pending: number[] };
const history = new Map<string, Series>();

function remember(d: Dashboard): void {
  const total: Series = history.get("*") ?? { throughput: [], waitMs: [], pending: [] };
  let throughput = 0;
  let pending = 0;
  let wait = 0;
  for (const q of d.queues) {
    const s = history.get(q.name) ?? { throughput: [], waitMs: [], pending: [] };
    s.throughput.push(q.throughputPerMinute);
    s.waitMs.push(q.averageWaitMs);
    s.pending.push(Number(q.pending));
    history.set(q.name, s);
    throughput += q.throughputPerMinute;
    pending += Number(q.pending + q.delayed);
    wait = Math.max(wait, Number(q.oldestWaitMs));
  }
  total.throughput.push(throughput);
  total.waitMs.push(wait);
  total.pending.push(pending);
  history.set("*", total);
  for (const s of history.values())
    for (const values of Object.values(s)) if (values.length > HISTORY) values.splice(0, values.length - HISTORY);
}

export function overview(root: HTMLElement, role: Role, signal: AbortSignal): void {
  if (role !== "operator") {
    root.replaceChildren(
      h("h2", {}, "Overview"),
      h(
        "p",
        { id: "overview-denied" },
        `The overview shows every queue and worker, so it needs an operator key; this key is ${role === "admin" ? "an admin" : "a user"} key. `,
        h("a", { href: "#/jobs" }, "Your jobs"),
        " and ",
        h("a", { href: "#/batches" }, "batches"),
        " are available.",
      ),
    );
    return;
  }
  const live = h("p", { id: "live", class: "muted" }, "Connecting…");
  const body = h("div", { id: "overview" });
  root.replaceChildren(h("h2", {}, "Overview"), live, body);
  void (async () => {
    while (!signal.aborted) {
      try {
        for await (const d of admin.watchDashboard({ intervalSeconds: INTERVAL_SECONDS }, { signal })) {
          remember(d);
          live.textContent = `Live, updated ${new Date().toLocaleTimeString()}`;
          // Keep the keyboard focus on the same control across updates.
          const focused = document.activeElement?.getAttribute("aria-label");
          body.replaceChildren(...render(d));
          if (focused) body.querySelector<HTMLElement>(`[aria-label="${CSS.escape(focused)}"]`)?.focus();
        }
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        live.textContent = `Disconnected (${describe(e)}); reconnecting…`;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
}

function render(d: Dashboard): Node[] {
  const health = d.health;
  const total = history.get("*");
  const cards = h(
    "div",
    { class: "grid" },
    h(
      "section",
      { class: "card", "aria-labelledby": "health-h" },
      h("h3", { id: "health-h" }, "Health: ", h("span", { id: "health-status", class: `status-${health?.status ?? "down"}` }, health?.status ?? "unknown")),
      facts([
        ["Queue (Redis)", ms(health?.redisLatencyMs)],
        ["Store", ms(health?.postgresLatencyMs)],
        ["Upstream errors (5 min)", `${((health?.upstreamErrorRate ?? 0) * 100).toFixed(1)} %`],
        ["Workers", health?.workers ?? 0],
        ["Backlog", h("span", { id: "backlog" }, String(health?.backlog ?? 0))],
        ["Oldest wait", ms(health?.oldestWaitMs)],
      ]),
      health?.reasons.length ? h("ul", {}, ...health.reasons.map((r) => h("li", {}, r))) : null,
    ),
    h("section", { class: "card" }, h("h3", {}, "Jobs per minute (all queues)"), sparkline("Jobs per minute", total?.throughput ?? [])),
    h("section", { class: "card" }, h("h3", {}, "Oldest wait, ms (all queues)"), sparkline("Oldest wait in ms", total?.waitMs ?? [])),
    h("section", { class: "card" }, h("h3", {}, "Waiting jobs (all queues)"), sparkline("Waiting jobs", total?.pending ?? [])),
  );
  const queueRows = d.queues.map((q) => {
    const s = history.get(q.name);
    const toggle = h(
      "button",
      {
        type: "button",
        class: "operator",
        "data-action": q.paused ? "resume" : "pause",
        "aria-label": `${q.paused ? "Resume" : "Pause"} ${q.name}`,
        onclick: async (ev: Event) => {
          const b = ev.currentTarget as HTMLButtonElement;
          b.disabled = true;
          try {
            const state = q.paused ? await admin.resumeQueue({ queue: q.name }) : await admin.pauseQueue({ queue: q.name });
            notice(`${state.queue} is ${state.paused ? "paused" : "running"}.`);
          } catch (e) {
            notice(describe(e), true);
            b.disabled = false;
          }
        },
      },
      q.paused ? "Resume" : "Pause",
    );
    return h(
      "tr",
      { "data-queue": q.name },
      h("th", { scope: "row", class: "mono" }, q.name),
      h("td", { class: "num", "data-field": "pending" }, q.pending),
      h("td", { class: "num hide-narrow", "data-field": "delayed" }, q.delayed),
      h("td", { class: "num", "data-field": "running" }, q.running),
      h("td", { class: "num" }, q.throughputPerMinute.toFixed(1)),
      h("td", { class: "num" }, ms(q.averageWaitMs)),
      h("td", { class: "num hide-narrow" }, ms(q.averageRuntimeMs)),
      h("td", { class: "num hide-narrow" }, q.failedLastHour),
      h("td", { class: "hide-narrow spark" }, sparkline(`${q.name} jobs per minute`, s?.throughput ?? [])),
      h("td", { "data-field": "paused" }, q.paused ? "paused " : "", toggle),
    );
  });
  const workerRows = d.workers.map((w) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", class: "mono" }, w.id),
      h("td", { class: "hide-narrow" }, `${w.host} (pid ${w.pid})`),
      h("td", { class: "num" }, `${w.busySlots}/${w.totalSlots}`),
      h("td", { class: "mono" }, ...w.jobIds.flatMap((id, i) => [i ? " " : "", h("a", { href: `#/job/${id}` }, id.slice(0, 8))])),
      h("td", { class: "num" }, w.residentMemoryMib === undefined ? "–" : `${w.residentMemoryMib.toFixed(0)} MiB`),
      h("td", { class: "num hide-narrow" }, w.cpuPercent === undefined ? "–" : `${w.cpuPercent.toFixed(0)} %`),
      h("td", { class: "num hide-narrow" }, ms(w.heartbeatAgeMs)),
    ),
  );
  const perf = d.performance?.windows.map((w) => {
    const all = w.byQueue.reduce(
      (a, m) => ({ completed: a.completed + Number(m.completed), failed: a.failed + Number(m.failed), cost: a.cost + (m.costUsd ?? 0) }),
      { completed: 0, failed: 0, cost: 0 },
    );
    return h("tr", {}, h("th", { scope: "row" }, w.window), h("td", { class: "num", "data-field": `completed-${w.window}` }, all.completed), h("td", { class: "num" }, all.failed), h("td", { class: "num" }, usd(all.cost)));
  }) ?? [];
  return [
    cards,
    h("h3", {}, "Queues"),
    table("Queues", ["Queue", "Pending#", "~Delayed#", "Running#", "Jobs/min#", "Avg wait#", "~Avg run#", "~Failed 1 h#", "~Last hour", "State"], queueRows),
    h("h3", {}, "Workers"),
    workerRows.length ? table("Workers", ["Worker", "~Host", "Slots#", "Jobs", "Memory#", "~CPU#", "~Heartbeat#"], workerRows) : h("p", { class: "muted" }, "No live workers."),
    h("h3", {}, "Finished jobs"),
    table("Finished jobs per window", ["Window", "Completed#", "Failed#", "Cost#"], perf),
  ];
}
