// Validate glTF/GLB files with the Khronos glTF-Validator (npm gltf-validator).
// Usage: node web/tools/validate_gltf.mjs FILE.glb [...]   Prints one JSON report per file (one line each);
// exits 1 when any file has an error or a warning, 2 on a usage error.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import validator from "gltf-validator";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate_gltf.mjs FILE.glb [...]");
  process.exit(2);
}
let bad = false;
for (const file of files) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, { uri: basename(file), maxIssues: 100 });
  const issues = report.issues;
  if (issues.numErrors > 0 || issues.numWarnings > 0) bad = true;
  console.log(JSON.stringify({
    file,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    hints: issues.numHints,
    messages: issues.messages.map((m) => `${m.severity} ${m.code} ${m.pointer ?? ""}: ${m.message}`),
    info: report.info,
  }));
}
process.exit(bad ? 1 : 0);
