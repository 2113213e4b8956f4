// Drives the dashboard in Debian's headless Chromium (playwright-core, executablePath: it
// never downloads a browser) for tests/it/dashboard.rs. It talks with the test over a line
// protocol: it writes one JSON object per line to stdout, `{"step": name, ...}`; for a step
// with `"ask": true` it then reads one line from stdin (a job id the test made). It ends with
// `{"step": "done"}`, or prints `{"error": ...}` and exits 1.
//
// Environment: DASHBOARD_URL (the page, through a proxy the test can cut), OPERATOR_KEY, USER_KEY, EXPECTED_TEXT (the streamed
// job's whole text), CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (a directory: when set,
// the overview and a job's live stream are saved there as dashboard-overview.png and
// dashboard-job.png).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const url = env("DASHBOARD_URL");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));
async function ask(step) {
  say(step, { ask: true });
  const { value, done } = await lines.next();
  if (done) throw new Error(`the test closed stdin at ${step}`);
  return value.trim();
}
const check = (ok, what) => {
  if (!ok) throw new Error(what);
};

async function signIn(browser, key, role) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on("dialog", (d) => void d.accept());
  const response = await page.goto(url);
  check(response?.ok(), `GET ${url}: ${response?.status()}`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.waitForSelector(`body[data-role="${role}"]`);
  // The key is kept in session storage, never in the URL or a cookie.
  check(!page.url().includes(key), "the key is not in the URL");
  check((await context.cookies()).length === 0, "no cookies");
  return { context, page };
}

const text = (page, selector) => page.locator(selector).textContent();

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"),
    args: ["--no-sandbox"],
  });
  const shots = process.env.SCREENSHOTS;
  try {
    // Operator: the overview is live.
    const { page } = await signIn(browser, env("OPERATOR_KEY"), "operator");
    const running = page.locator('tr[data-queue="openai-general"] td[data-field="running"]');
    await running.waitFor();
    check((await running.textContent()) === "0", "nothing runs before the test submits");
    check((await page.locator("button.operator").count()) > 0, "an operator sees pause/resume");
    say("overview");

    const streamed = await ask("submit-streamed");
    await page.waitForFunction(
      () => document.querySelector('tr[data-queue="openai-general"] td[data-field="running"]')?.textContent === "1",
    );
    say("overview-updated");

    // The streamed job's tokens arrive live, in order, before the job ends.
    await page.goto(`${url}#/job/${streamed}`);
    const expected = env("EXPECTED_TEXT");
    await page.waitForFunction((t) => document.getElementById("output")?.textContent === t, expected);
    check((await text(page, "#job-status")) === "running", "the text arrived while the job runs");
    say("tokens-live");
    if (shots) await page.screenshot({ path: `${shots}/dashboard-job.png`, fullPage: true });
    // The connection drops (the test cuts its proxy) and comes back: the page resumes after
    // the last sequence it applied.
    await ask("cut");
    await page.waitForFunction(() => document.getElementById("stream-state")?.textContent?.startsWith("disconnected"));
    await ask("restore");
    const last = await page.locator("#output").getAttribute("data-sequence");
    check(Number(last) > 0, `a sequence was seen: ${last}`);
    await page.waitForFunction((s) => document.getElementById("stream-state")?.textContent === `resuming after ${s}`, last);
    say("resumed");
    await ask("release-streamed");
    await page.waitForFunction(() => document.getElementById("job-status")?.textContent === "completed");
    await page.locator("#result-output-tokens").waitFor();
    const output = await text(page, "#output");
    check(output === expected, `the whole text once, in order: ${JSON.stringify(output)}`);
    say("completed");

    // Cancel from the page ends a running job.
    const held = await ask("submit-held");
    await page.goto(`${url}#/job/${held}`);
    await page.waitForFunction(() => document.getElementById("job-status")?.textContent === "running");
    await page.getByRole("button", { name: "Cancel job" }).click();
    await page.waitForFunction(() => document.getElementById("job-status")?.textContent === "cancelled");
    say("cancelled");

    // A failed job is retried from the failed list.
    const failed = await ask("submit-failed");
    await page.goto(`${url}#/failed`);
    const row = page.locator(`tr[data-job="${failed}"]`);
    await row.waitFor();
    await row.locator('button[data-action="retry"]').click();
    await page.waitForFunction(() => document.getElementById("notice")?.textContent?.startsWith("Retried 1"));
    say("retried");

    // A user key sees no operator views or controls.
    const user = await signIn(browser, env("USER_KEY"), "user");
    await user.page.locator("#overview-denied").waitFor();
    check((await user.page.locator("button.operator").count()) === 0, "no pause/resume for a user");
    await user.page.goto(`${url}#/failed`);
    await user.page.locator("#failed-denied").waitFor();
    await user.page.goto(`${url}#/jobs`);
    await user.page.locator("#jobs table, #jobs p.muted").first().waitFor();
    check((await user.page.locator(`tr[data-job="${streamed}"]`).count()) === 0, "a user sees only its tenant's jobs");
    say("user");
    if (shots) {
      // The overview again, with some history in its charts.
      await page.goto(`${url}#/`);
      await page.locator('tr[data-queue="openai-general"]').waitFor();
      await page.waitForTimeout(6000);
      await page.screenshot({ path: `${shots}/dashboard-overview.png`, fullPage: true });
    }
    say("done");
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
    process.exit(1);
  },
);
