// The dashboard's entry: the key form, role detection and the hash router
// (#/ overview, #/jobs, #/job/<id>, #/failed, #/batches, #/batch/<id>).
import { apiKey, describe, detectRole, setApiKey, type Role } from "./api.js";
import { batchLookup, batchPage } from "./batches.js";
import { h, notice } from "./dom.js";
import { failedJobs } from "./failed.js";
import { jobPage } from "./job.js";
import { jobList } from "./jobs.js";
import { overview } from "./overview.js";

let role: Role | null = null;
let current = new AbortController();

function main(): HTMLElement {
  const el = document.getElementById("main");
  if (!el) throw new Error("the page has no main element");
  return el;
}

async function useKey(): Promise<void> {
  const label = document.getElementById("role");
  role = null;
  document.body.dataset.role = "";
  if (!apiKey()) {
    if (label) label.textContent = "";
    return route();
  }
  try {
    role = await detectRole();
    document.body.dataset.role = role;
    if (label) label.textContent = `${role} key`;
    notice("");
  } catch (e) {
    setApiKey(null);
    if (label) label.textContent = "";
    notice(describe(e), true);
  }
  route();
}

function route(): void {
  current.abort();
  current = new AbortController();
  notice("");
  const root = main();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "/").split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) {
    const target = (a.getAttribute("href") ?? "").replace(/^#\//, "");
    if (target === (parts[0] ?? "") || (target === "jobs" && parts[0] === "job") || (target === "batches" && parts[0] === "batch"))
      a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!role) {
    root.replaceChildren(
      h("h2", {}, "Sign in"),
      h("p", { id: "need-key" }, "Paste an API key above. It is kept in this tab's session storage only and sent as an authorization header to this server."),
    );
    return;
  }
  const signal = current.signal;
  switch (parts[0]) {
    case "jobs":
      return jobList(root, new URLSearchParams(query ?? ""));
    case "job":
      return parts[1] ? jobPage(root, decodeURIComponent(parts[1]), signal) : jobList(root, new URLSearchParams());
    case "failed":
      return failedJobs(root, role);
    case "batches":
      return batchLookup(root);
    case "batch":
      return parts[1] ? batchPage(root, decodeURIComponent(parts[1]), signal) : batchLookup(root);
    default:
      return overview(root, role, signal);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("key-form") as HTMLFormElement;
  const input = document.getElementById("key") as HTMLInputElement;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setApiKey(input.value.trim() || null);
    input.value = "";
    void useKey();
  });
  document.getElementById("forget-key")?.addEventListener("click", () => {
    setApiKey(null);
    void useKey();
  });
  window.addEventListener("hashchange", route);
  void useKey();
});
