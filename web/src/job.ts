// A job's page: its state, progress stages, milestones, usage and cost, attempts and errors,
// and its live token stream (StreamJob), which resumes after a disconnect from the last
// sequence it applied, so no text is lost or shown twice. Cancel ends it.
import { aborted, describe, jobs } from "./api.js";
import { facts, h, ms, notice, time, usd } from "./dom.js";
import {
  JobStatus,
  MilestoneKind,
  Stage,
  StageStatus,
  type Job,
  type JobEvent,
  type StageState,
} from "./gen/llmjobs/v1/jobs_pb.js";
import { statusName } from "./jobs.js";

/** Wait before reconnecting a stream that broke (ms). */
const RECONNECT_MS = 1000;

const terminal = (s: JobStatus) => s === JobStatus.COMPLETED || s === JobStatus.FAILED || s === JobStatus.CANCELLED;
const stageName = (s: Stage) => (Stage[s] ?? "?").toLowerCase().replaceAll("_", " ");

export function jobPage(root: HTMLElement, id: string, signal: AbortSignal): void {
  const state = h("span", { id: "job-status" }, "…");
  const live = h("span", { id: "stream-state", class: "muted" }, "connecting");
  const cancel = h("button", { type: "button", id: "cancel-job", class: "danger", disabled: true }, "Cancel job");
  const progress = h("progress", { id: "job-progress", max: 1, "aria-label": "Progress of the output" });
  const progressText = h("span", { id: "progress-text", class: "muted" });
  const stages = h("ol", { class: "stages", id: "stages", "aria-label": "Stages of the current attempt" });
  const output = h("pre", { class: "output", id: "output", "aria-live": "off", tabindex: 0, "aria-label": "Generated text" });
  const reasoning = h("pre", { class: "output", id: "reasoning", hidden: true, "aria-label": "Reasoning text" });
  const milestones = h("ul", { id: "milestones" });
  const details = h("div", { id: "job-details" });
  const outcome = h("div", { id: "job-outcome" });
  root.replaceChildren(
    h("h2", {}, "Job ", h("span", { class: "mono" }, id)),
    h("div", { class: "row" }, "Status: ", state, " · stream: ", live, cancel),
    h("div", { class: "row" }, progress, progressText),
    stages,
    h("h3", {}, "Output"),
    output,
    reasoning,
    h("h3", {}, "Milestones"),
    milestones,
    h("div", { class: "grid" }, details, outcome),
  );

  let lastSequence = 0n;
  let attempt = 0;
  let tokens = 0n;
  let ended = false;
  const stageStates = new Map<Stage, StageState>();

  const showStatus = (s: JobStatus) => {
    state.textContent = statusName(s);
    state.className = `st-${statusName(s)}`;
    cancel.disabled = terminal(s);
  };
  const showStages = () => {
    stages.replaceChildren(
      ...[...stageStates.values()]
        .sort((a, b) => a.stage - b.stage)
        .map((s) => h("li", { class: (StageStatus[s.status] ?? "").toLowerCase() }, stageName(s.stage), s.durationMs !== undefined ? ` ${ms(s.durationMs)}` : "")),
    );
  };
  const showJob = (j: Job) => {
    showStatus(j.status);
    details.replaceChildren(
      h("h3", {}, "Job"),
      facts([
        ["Type", j.jobType],
        ["Queue", h("span", { class: "mono" }, j.queue)],
        ["Model", j.generationConfig?.model || "default"],
        ["Attempts", j.attempts],
        ["Created", time(j.createTime)],
        ["Started", time(j.startTime)],
        ["Ended", time(j.endTime)],
        ["Tags", j.tags.join(", ") || "–"],
        ["Batch", j.batchId ? h("a", { href: `#/batch/${j.batchId}` }, j.batchId) : "–"],
        ["Error", j.error ? `${j.error.code}: ${j.error.message}` : "–"],
      ]),
    );
  };
  const showResult = async () => {
    try {
      const r = await jobs.getJobResult({ jobId: id });
      outcome.replaceChildren(
        h("h3", {}, "Result"),
        facts([
          ["Status", statusName(r.status)],
          ["Finish reason", r.finishReason || "–"],
          ["Model", `${r.model || "–"}${r.simulated ? " (simulated)" : ""}`],
          ["Input tokens", r.usage?.inputTokens ?? 0n],
          ["Output tokens", h("span", { id: "result-output-tokens" }, String(r.usage?.outputTokens ?? 0n))],
          ["Cost", usd(r.costUsd)],
          ["Queue wait", ms(r.queueWaitMs)],
          ["First token", ms(r.timeToFirstTokenMs)],
          ["Duration", ms(r.durationMs)],
          ["Tokens/s", r.outputTokensPerSecond.toFixed(1)],
          ["Attempts", r.attempts],
        ]),
        ...(r.attemptErrors.length
          ? [h("div", {}, h("h3", {}, "Attempt errors"), h("ol", { id: "attempt-errors" }, ...r.attemptErrors.map((a) => h("li", { value: a.attempt }, `attempt ${a.attempt}: ${a.error?.code}: ${a.error?.message}`))))]
          : []),
      );
    } catch (e) {
      outcome.replaceChildren(h("p", { class: "error" }, describe(e)));
    }
  };

  const apply = (ev: JobEvent) => {
    const k = ev.kind;
    if (k.case === "heartbeat") {
      showStatus(k.value.status);
      return;
    }
    if (ev.sequence <= lastSequence) return;
    lastSequence = ev.sequence;
    output.dataset.sequence = String(lastSequence);
    switch (k.case) {
      case "queued":
        showStatus(JobStatus.QUEUED);
        break;
      case "started":
        showStatus(JobStatus.RUNNING);
        if (k.value.attempt > 1 && k.value.attempt !== attempt) {
          // A new attempt generates from the beginning.
          output.textContent = "";
          reasoning.textContent = "";
        }
        attempt = k.value.attempt;
        break;
      case "tokenDelta":
        if (k.value.text) output.append(k.value.text);
        if (k.value.reasoningText) {
          reasoning.hidden = false;
          reasoning.append(k.value.reasoningText);
        }
        tokens = k.value.outputTokens;
        progressText.textContent = `${tokens} tokens`;
        break;
      case "snapshot":
        output.textContent = k.value.content;
        reasoning.textContent = k.value.reasoningContent;
        reasoning.hidden = !k.value.reasoningContent;
        showStatus(k.value.status);
        break;
      case "stageChanged":
        if (k.value.attempt !== attempt) stageStates.clear();
        for (const s of [k.value.previous, k.value.current]) if (s) stageStates.set(s.stage, s);
        for (const s of k.value.skipped) stageStates.set(s, { stage: s, status: StageStatus.SKIPPED } as StageState);
        showStages();
        break;
      case "progress":
        tokens = k.value.outputTokens;
        if (k.value.fraction !== undefined) progress.value = k.value.fraction;
        progressText.textContent = `${tokens}${k.value.estimatedOutputTokens ? ` of ~${k.value.estimatedOutputTokens}` : ""} tokens, ${k.value.outputTokensPerSecond.toFixed(1)}/s`;
        break;
      case "milestone":
        milestones.append(h("li", {}, `${(MilestoneKind[k.value.kind] ?? "?").toLowerCase().replaceAll("_", " ")} (attempt ${k.value.attempt}, ${k.value.outputTokens} tokens)${k.value.detail ? `: ${k.value.detail}` : ""}`));
        break;
      case "attemptFailed":
        milestones.append(h("li", { class: "error" }, `attempt ${k.value.attempt} failed: ${k.value.error?.code}: ${k.value.error?.message}${k.value.willRetry ? " (will retry)" : ""}`));
        break;
      case "completed":
      case "failed":
      case "cancelled":
        ended = true;
        showStatus(k.case === "completed" ? JobStatus.COMPLETED : k.case === "failed" ? JobStatus.FAILED : JobStatus.CANCELLED);
        if (k.case === "completed") progress.value = 1;
        break;
    }
  };

  cancel.addEventListener("click", async () => {
    if (!confirm(`Cancel job ${id}?`)) return;
    cancel.disabled = true;
    try {
      const j = await jobs.cancelJob({ jobId: id, reason: "cancelled from the dashboard" });
      showJob(j);
      notice(`Job ${id} is ${statusName(j.status)}.`);
    } catch (e) {
      notice(describe(e), true);
      cancel.disabled = false;
    }
  });

  void (async () => {
    try {
      showJob(await jobs.getJob({ jobId: id }));
    } catch (e) {
      root.append(h("p", { class: "error" }, describe(e)));
      return;
    }
    // Follow the log; after a break, resume after the last sequence applied.
    while (!ended && !signal.aborted) {
      try {
        live.textContent = lastSequence ? `resuming after ${lastSequence}` : "connecting";
        for await (const ev of jobs.streamJob({ jobId: id, afterSequence: lastSequence }, { signal })) {
          live.textContent = "live";
          apply(ev);
        }
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        live.textContent = `disconnected (${describe(e)}); reconnecting`;
        await new Promise((r) => setTimeout(r, RECONNECT_MS));
        continue;
      }
      if (!ended) await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
    if (signal.aborted) return;
    live.textContent = "ended";
    try {
      showJob(await jobs.getJob({ jobId: id }));
    } catch {
      // The job's end is shown already.
    }
    await showResult();
  })();
}
