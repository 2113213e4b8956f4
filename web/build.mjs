// Builds the dashboard: regenerates the Connect-ES client from proto/ (buf + protoc-gen-es,
// into src/gen), type-checks src/ (tsc) and bundles src/main.ts with esbuild into dist/assets/app.js, copies the page and
// its style sheet, and records the SHA-256 of every source and output in dist/SOURCES.sha256
// (sha256sum's format, paths from the repository root, so `sha256sum -c` works there too).
//
//   node web/build.mjs           rebuild (needs `npm ci` in web/ once)
//   node web/build.mjs --check   fail when a source or an output no longer matches
//                                dist/SOURCES.sha256 (plain node: no network, no node_modules)
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const root = join(web, "..");
const dist = join(web, "dist");
const record = join(dist, "SOURCES.sha256");

/** Every file under `dir`, sorted, as absolute paths. */
function walk(dir) {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? walk(path) : [path];
    });
}

/** The files the build reads and the files it writes, as paths from the repository root. */
function files() {
  const sources = [
    ...walk(join(root, "proto")).filter((p) => p.endsWith(".proto")),
    join(web, "build.mjs"),
    join(web, "buf.gen.yaml"),
    join(web, "package.json"),
    join(web, "package-lock.json"),
    join(web, "tsconfig.json"),
    ...walk(join(web, "src")),
  ];
  const outputs = ["index.html", "assets/app.js", "assets/app.css"].map((p) => join(dist, p));
  return [...sources, ...outputs].map((p) => relative(root, p));
}

function digest(path) {
  return createHash("sha256").update(readFileSync(join(root, path))).digest("hex");
}

function hashes() {
  return files()
    .map((p) => `${digest(p)}  ${p}\n`)
    .join("");
}

if (process.argv.includes("--check")) {
  let recorded;
  try {
    recorded = readFileSync(record, "utf8");
  } catch {
    console.error(`web check: ${relative(root, record)} is missing; run \`node web/build.mjs\``);
    process.exit(1);
  }
  const now = hashes();
  if (now !== recorded) {
    const before = new Set(recorded.split("\n"));
    const changed = now
      .split("\n")
      .filter((line) => line && !before.has(line))
      .map((line) => line.slice(66));
    const after = new Set(now.split("\n"));
    const gone = recorded
      .split("\n")
      .filter((line) => line && !after.has(line))
      .map((line) => line.slice(66))
      .filter((p) => !changed.includes(p));
    console.error(
      "web check: the dashboard's built assets do not match their sources; run " +
        "`(cd web && npm ci) && node web/build.mjs` and commit web/dist.\n" +
        `changed or new: ${changed.join(", ") || "-"}; removed: ${gone.join(", ") || "-"}`,
    );
    process.exit(1);
  }
  console.log(`web check: web/dist matches its ${now.split("\n").length - 1} recorded files`);
  process.exit(0);
}

const bin = (name) => join(web, "node_modules", ".bin", name);
execFileSync(bin("buf"), ["generate", "../proto", "--template", "buf.gen.yaml"], {
  cwd: web,
  stdio: "inherit",
  // buf finds protoc-gen-es on the PATH.
  env: { ...process.env, PATH: `${join(web, "node_modules", ".bin")}:${process.env.PATH}` },
});
// Type-check (esbuild strips types without checking them).
execFileSync(bin("tsc"), ["-p", "tsconfig.json"], { cwd: web, stdio: "inherit" });
const esbuild = await import("esbuild");
mkdirSync(join(dist, "assets"), { recursive: true });
await esbuild.build({
  entryPoints: [join(web, "src", "main.ts")],
  outfile: join(dist, "assets", "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync(join(web, "src", "index.html"), join(dist, "index.html"));
copyFileSync(join(web, "src", "style.css"), join(dist, "assets", "app.css"));
writeFileSync(record, hashes());
console.log(`built web/dist; recorded ${relative(root, record)}`);
