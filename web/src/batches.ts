// Batches: the API has no ListBatches, so a batch is looked up by its id (from a job's page or
// the submitter); its progress, counts and cost follow live (StreamBatch) and it can be
// cancelled.
import { aborted, batches, describe } from "./api.js";
import { facts, h, notice, time, usd } from "./dom.js";
import type { Batch } from "./gen/llmjobs/v1/batches_pb.js";

export function batchLookup(root: HTMLElement): void {
  root.replaceChildren(
    h("h2", {}, "Batches"),
    h("p", { class: "muted" }, "The service has no call that lists batches: look one up by its id (jobs of a batch link to it)."),
    h(
      "form",
      {
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          const id = new FormData(ev.currentTarget as HTMLFormElement).get("batch");
          if (typeof id === "string" && id.trim()) location.hash = `#/batch/${id.trim()}`;
        },
      },
      h("label", { for: "batch-id" }, "Batch id"),
      h("input", { id: "batch-id", name: "batch", size: 38, required: true }),
      h("button", { type: "submit" }, "Show"),
    ),
  );
}

export function batchPage(root: HTMLElement, id: string, signal: AbortSignal): void {
  const body = h("div", { id: "batch" }, h("p", {}, "Loading…"));
  root.replaceChildren(h("h2", {}, "Batch ", h("span", { class: "mono" }, id)), body);
  const show = (b: Batch) => {
    const done = b.completedCount + b.failedCount + b.cancelledCount;
    const cancel = h("button", { type: "button", class: "danger", disabled: done === b.jobCount }, "Cancel batch");
    cancel.addEventListener("click", async () => {
      if (!confirm(`Cancel every unfinished job of batch ${id}?`)) return;
      try {
        show(await batches.cancelBatch({ batchId: id, reason: "cancelled from the dashboard" }));
        notice(`Batch ${id} cancelled.`);
      } catch (e) {
        notice(describe(e), true);
      }
    });
    body.replaceChildren(
      h("p", {}, b.displayName || ""),
      h("progress", { max: b.jobCount || 1, value: done, "aria-label": "Finished jobs of the batch" }),
      h("p", {}, `${done} of ${b.jobCount} finished`),
      facts([
        ["Queued", b.queuedCount],
        ["Running", b.runningCount],
        ["Completed", b.completedCount],
        ["Failed", b.failedCount],
        ["Cancelled", b.cancelledCount],
        ["Tokens in / out", `${b.inputTokens} / ${b.outputTokens}`],
        ["Cost", usd(b.costUsd)],
        ["Created", time(b.createTime)],
        ["Ended", time(b.endTime)],
      ]),
      h("div", { class: "row" }, cancel, h("a", { href: `#/jobs?batch=${encodeURIComponent(id)}` }, "Its jobs")),
    );
  };
  void (async () => {
    try {
      show(await batches.getBatch({ batchId: id }));
      for await (const ev of batches.streamBatch({ batchId: id }, { signal }))
        if (ev.kind.case === "progress") show(ev.kind.value);
    } catch (e) {
      if (!aborted(e) && !signal.aborted) body.append(h("p", { class: "error" }, describe(e)));
    }
  })();
}
