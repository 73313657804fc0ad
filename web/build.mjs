// Build the web page into static files that ship inside the Python package (api/static/).
//
//   node web/build.mjs [OUT_DIR]      (default OUT_DIR: api/static, relative to the repository root)
//
// Bundles web/src/main.ts with everything it imports from node_modules (three.js) into app.js and
// copies index.html and style.css beside it. The output is deterministic: the same sources and
// lockfile give the same bytes (no timestamps, no absolute paths, no source maps), which
// tests/deploy/test_web_bundle.py checks against the shipped copy.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const WEB = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(WEB, "..");
const SRC = join(WEB, "src");
const STATIC_FILES = ["index.html", "style.css"];

const outDir = resolve(ROOT, process.argv[2] ?? "api/static");
mkdirSync(outDir, { recursive: true });
for (const name of readdirSync(outDir)) {
  if (name !== ".gitkeep") rmSync(join(outDir, name), { recursive: true, force: true });
}

await build({
  entryPoints: [join(SRC, "main.ts")],
  outfile: join(outDir, "app.js"),
  absWorkingDir: WEB,
  bundle: true,
  format: "esm",
  target: ["es2022"],
  platform: "browser",
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});
for (const name of STATIC_FILES) copyFileSync(join(SRC, name), join(outDir, name));
console.log(`built ${["app.js", ...STATIC_FILES].join(", ")} into ${outDir}`);
