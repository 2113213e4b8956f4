// The jobs list: filters (status, job type, tag, batch) and pages (ListJobs), newest first.
import { describe } from "./api.js";
import { jobs } from "./api.js";
import { h, table, time } from "./dom.js";
import { JobStatus, type Job } from "./gen/llmjobs/v1/jobs_pb.js";

const PAGE_SIZE = 25;

export function statusName(s: JobStatus): string {
  return (JobStatus[s] ?? "UNKNOWN").replace("JOB_STATUS_", "").toLowerCase();
}

export function jobRow(j: Job): HTMLTableRowElement {
  const st = statusName(j.status);
  return h(
    "tr",
    { "data-job": j.id },
    h("td", { class: "mono" }, h("a", { href: `#/job/${j.id}` }, j.id)),
    h("td", { class: `st-${st}`, "data-field": "status" }, st),
    h("td", { class: "hide-narrow" }, j.jobType),
    h("td", { class: "hide-narrow mono" }, j.queue),
    h("td", { class: "num" }, j.outputTokens),
    h("td", { class: "num hide-narrow" }, j.attempts),
    h("td", { class: "hide-narrow" }, time(j.createTime)),
  );
}

export const JOB_HEAD = ["Job", "Status", "~Type", "~Queue", "Tokens#", "~Attempts#", "~Created"];

export function jobList(root: HTMLElement, params: URLSearchParams): void {
  const field = (name: string, label: string, value: string) => [
    h("label", { for: `f-${name}` }, label),
    h("input", { id: `f-${name}`, name, value, size: 14 }),
  ];
  const status = h(
    "select",
    { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    ...[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED].map((s) =>
      h("option", { value: statusName(s), selected: params.get("status") === statusName(s) }, statusName(s)),
    ),
  );
  const form = h(
    "form",
    {
      role: "search",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const data = new FormData(ev.currentTarget as HTMLFormElement);
        const next = new URLSearchParams();
        for (const [k, v] of data) if (typeof v === "string" && v.trim()) next.set(k, v.trim());
        location.hash = `#/jobs?${next}`;
      },
    },
    h("label", { for: "f-status" }, "Status"),
    status,
    ...field("type", "Job type", params.get("type") ?? ""),
    ...field("tag", "Tag", params.get("tag") ?? ""),
    ...field("batch", "Batch id", params.get("batch") ?? ""),
    h("button", { type: "submit" }, "Filter"),
  );
  const out = h("div", { id: "jobs" }, h("p", {}, "Loading…"));
  root.replaceChildren(h("h2", {}, "Jobs"), form, out);

  const tokens: string[] = [""];
  const load = async (page: number) => {
    try {
      const wanted = params.get("status");
      const res = await jobs.listJobs({
        pageSize: PAGE_SIZE,
        pageToken: tokens[page],
        status: wanted ? JobStatus[wanted.toUpperCase() as keyof typeof JobStatus] : JobStatus.UNSPECIFIED,
        jobType: params.get("type") ?? "",
        tag: params.get("tag") ?? "",
        batchId: params.get("batch") ?? "",
      });
      tokens[page + 1] = res.nextPageToken;
      const prev = h("button", { type: "button", disabled: page === 0, onclick: () => void load(page - 1) }, "Previous page");
      const next = h("button", { type: "button", disabled: !res.nextPageToken, onclick: () => void load(page + 1) }, "Next page");
      out.replaceChildren(
        res.jobs.length ? table("Jobs", JOB_HEAD, res.jobs.map(jobRow)) : h("p", { class: "muted" }, "No jobs match."),
        h("div", { class: "row" }, prev, h("span", {}, `Page ${page + 1}`), next),
      );
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, describe(e)));
    }
  };
  void load(0);
}
