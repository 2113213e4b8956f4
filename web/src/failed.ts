// Failed jobs (admin and operator keys): the list with every attempt's error, retry and forget
// of one job or of the selected ones, each after a confirmation.
import { admin, describe, type Role } from "./api.js";
import { h, notice, table, time } from "./dom.js";
import type { FailedJob } from "./gen/llmjobs/v1/admin_pb.js";

const PAGE_SIZE = 50;

export function failedJobs(root: HTMLElement, role: Role): void {
  root.replaceChildren(h("h2", {}, "Failed jobs"));
  if (role === "user") {
    root.append(h("p", { id: "failed-denied" }, "Failed jobs are listed for admin and operator keys; this key is a user key."));
    return;
  }
  const out = h("div", { id: "failed" }, h("p", {}, "Loading…"));
  root.append(out);
  const tokens: string[] = [""];
  let page = 0;

  const act = async (verb: "retry" | "forget", ids: string[]) => {
    if (!ids.length) return notice("Select failed jobs first.", true);
    const what = ids.length === 1 ? `job ${ids[0]}` : `${ids.length} jobs`;
    if (!confirm(verb === "retry" ? `Run ${what} again?` : `Forget ${what}? They leave the failed list.`)) return;
    try {
      if (verb === "retry") {
        const r = await admin.retryJobs({ jobIds: ids });
        notice(`Retried ${r.retriedJobIds.length}${r.skipped.length ? `; skipped: ${r.skipped.map((s) => `${s.jobId} (${s.reason})`).join(", ")}` : ""}.`);
      } else {
        const r = await admin.forgetFailedJobs({ jobIds: ids });
        notice(`Forgot ${r.forgotten}${r.skipped.length ? `; skipped: ${r.skipped.map((s) => `${s.jobId} (${s.reason})`).join(", ")}` : ""}.`);
      }
    } catch (e) {
      notice(describe(e), true);
    }
    await load();
  };

  const row = (f: FailedJob) => {
    const id = f.job?.id ?? "";
    const last = f.attemptErrors[f.attemptErrors.length - 1]?.error ?? f.job?.error;
    return h(
      "tr",
      { "data-job": id },
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: id, "aria-label": `Select ${id}` })),
      h("td", { class: "mono" }, h("a", { href: `#/job/${id}` }, id)),
      h("td", { class: "mono hide-narrow" }, f.job?.queue ?? ""),
      h("td", {}, last ? `${last.code}: ${last.message}` : "–", f.attemptErrors.length > 1 ? h("span", { class: "muted" }, ` (${f.attemptErrors.length} attempts failed)`) : null),
      h("td", { class: "hide-narrow" }, time(f.failedTime)),
      h(
        "td",
        {},
        h("button", { type: "button", "data-action": "retry", onclick: () => void act("retry", [id]) }, "Retry"),
        " ",
        h("button", { type: "button", class: "danger", "data-action": "forget", onclick: () => void act("forget", [id]) }, "Forget"),
      ),
    );
  };

  const load = async () => {
    try {
      const res = await admin.listFailedJobs({ pageSize: PAGE_SIZE, pageToken: tokens[page] });
      tokens[page + 1] = res.nextPageToken;
      const picked = () => [...out.querySelectorAll<HTMLInputElement>("input.pick:checked")].map((i) => i.value);
      out.replaceChildren(
        res.failedJobs.length
          ? h(
              "div",
              {},
              h(
                "div",
                { class: "row" },
                h("button", { type: "button", onclick: () => void act("retry", picked()) }, "Retry selected"),
                h("button", { type: "button", class: "danger", onclick: () => void act("forget", picked()) }, "Forget selected"),
              ),
              table("Failed jobs", ["Pick", "Job", "~Queue", "Error", "~Failed", "Actions"], res.failedJobs.map(row)),
            )
          : h("p", { class: "muted" }, "No failed jobs."),
        h(
          "div",
          { class: "row" },
          h("button", { type: "button", disabled: page === 0, onclick: () => ((page -= 1), void load()) }, "Previous page"),
          h("span", {}, `Page ${page + 1}`),
          h("button", { type: "button", disabled: !res.nextPageToken, onclick: () => ((page += 1), void load()) }, "Next page"),
        ),
      );
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, describe(e)));
    }
  };
  void load();
}
