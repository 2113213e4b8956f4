// Building the page from data without HTML strings (text always goes in as text), and the
// formats of figures.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

type Child = Node | string | number | bigint | null | undefined | false;
type Attrs = Record<string, string | boolean | number | EventListener | undefined>;

/** An element `tag` with `attrs` (`on…` functions become listeners; `true` booleans become
 * empty attributes, `false`/undefined are left out) and `children`. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** A definition list of `pairs`. */
export function facts(pairs: [string, Child][]): HTMLDListElement {
  return h("dl", {}, ...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

/** A table with `head` (names; a trailing `#` right-aligns the column, a leading `~` hides it
 * on narrow screens, as the rows' cells must) and `rows`. */
export function table(caption: string, head: string[], rows: HTMLTableRowElement[]): HTMLElement {
  const ths = head.map((n) => {
    const classes = [n.endsWith("#") ? "num" : "", n.startsWith("~") ? "hide-narrow" : ""].join(" ").trim();
    return h("th", { scope: "col", class: classes || undefined }, n.replace(/^~/, "").replace(/#$/, ""));
  });
  return h(
    "div",
    { class: "table" },
    h("table", {}, h("caption", { class: "skip" }, caption), h("thead", {}, h("tr", {}, ...ths)), h("tbody", {}, ...rows)),
  );
}

export function ms(value: number | bigint | undefined): string {
  if (value === undefined) return "–";
  const n = Number(value);
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60_000) return `${(n / 1000).toFixed(1)} s`;
  return `${(n / 60_000).toFixed(1)} min`;
}

export function time(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toLocaleString() : "–";
}

export function usd(value: number | undefined): string {
  if (value === undefined) return "–";
  return value === 0 ? "$0" : `$${value.toFixed(value < 0.01 ? 6 : 4)}`;
}

/** A small line chart of `values` (oldest first) as inline SVG, labelled for screen readers. */
export function sparkline(label: string, values: number[]): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const last = values.length ? values[values.length - 1] : 0;
  svg.setAttribute("aria-label", `${label}: ${values.length} samples, latest ${last.toFixed(1)}`);
  const base = document.createElementNS(ns, "line");
  for (const [k, v] of [["x1", "0"], ["y1", "29"], ["x2", "100"], ["y2", "29"]]) base.setAttribute(k, v);
  svg.append(base);
  if (values.length > 1) {
    const max = Math.max(...values, 1e-9);
    const step = 100 / (values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(2)},${(29 - (v / max) * 27).toFixed(2)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  return svg;
}

/** Shows `text` in the page's status line (announced to screen readers). */
export function notice(text: string, error = false): void {
  const el = document.getElementById("notice");
  if (!el) return;
  el.textContent = text;
  el.className = error ? "error" : "";
}
