// Lint OpenAPI documents with Redocly CLI (@redocly/cli, pinned in
// package.json), an independent second opinion beside swagger-parser
// (validate.mjs): its recommended rules, warnings counted as errors
// (redocly.yaml), and no problem may be ignored. Also proves the linter is
// live: a copy of each document without its `security` statement must get
// errors (rule security-defined).
//   node lint.mjs OPENAPI.json...
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const cli = join(here, "node_modules", "@redocly", "cli", "bin", "cli.js");
const config = join(here, "redocly.yaml");

// Redocly's verdict on path: its totals and problems (--format json).
function lint(path) {
  const r = spawnSync(process.execPath, [cli, "lint", "--config", config, "--format", "json", path], {
    encoding: "utf8",
    timeout: 60000,
    env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
  });
  const start = (r.stdout ?? "").indexOf("{");
  if (r.error || start < 0) {
    throw new Error(`redocly did not answer for ${path}: ${r.error ?? r.stderr}`);
  }
  return JSON.parse(r.stdout.slice(start));
}

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node lint.mjs OPENAPI.json...");
  process.exit(2);
}
let passed = 0;
let failed = 0;
const tmp = mkdtempSync(join(tmpdir(), "openapi-lint-"));
try {
  for (const path of paths) {
    const report = lint(path);
    const { errors, warnings, ignored } = report.totals;
    if (errors + warnings + ignored === 0) {
      console.log(`redocly ${report.version}: ${path}: 0 errors, 0 warnings`);
      passed++;
    } else {
      console.error(`redocly ${report.version}: ${path}: ${errors} errors, ${warnings} warnings, ${ignored} ignored`);
      for (const p of report.problems) {
        console.error(`  ${p.severity} ${p.ruleId}: ${p.message} at ${p.location?.[0]?.pointer}`);
      }
      failed++;
    }
    const doc = JSON.parse(readFileSync(path, "utf8"));
    delete doc.security;
    const broken = join(tmp, "no-security.json");
    writeFileSync(broken, JSON.stringify(doc));
    const bad = lint(broken);
    if (bad.problems.some((p) => p.ruleId === "security-defined")) {
      console.log(`redocly: a copy of ${path} without security is refused, as it must be`);
      passed++;
    } else {
      console.error(`redocly: accepted ${path} without security; the linter is not checking`);
      failed++;
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
