// Validate OpenAPI documents with a real validator (@apidevtools/swagger-parser,
// which checks each against the OpenAPI 3.0 JSON schema and resolves every $ref).
// Also proves the validator is live by feeding it a broken copy of each (its
// first $ref pointed at a schema that does not exist), which must fail.
//   node validate.mjs OPENAPI.json...
import { readFileSync } from "node:fs";
import SwaggerParser from "@apidevtools/swagger-parser";

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate.mjs OPENAPI.json...");
  process.exit(2);
}

// Point the first $ref under paths at a schema that does not exist.
function breakFirstRef(node) {
  if (node === null || typeof node !== "object") {
    return false;
  }
  if (typeof node.$ref === "string") {
    node.$ref = "#/components/schemas/NoSuchSchema";
    return true;
  }
  return Object.values(node).some(breakFirstRef);
}

let passed = 0;
let failed = 0;
for (const path of paths) {
  const doc = JSON.parse(readFileSync(path, "utf8"));
  try {
    const api = await SwaggerParser.validate(structuredClone(doc));
    const ops = Object.values(api.paths).reduce((n, p) => n + Object.keys(p).length, 0);
    console.log(`openapi: ${path} is valid OpenAPI ${api.openapi} (${ops} operations)`);
  } catch (e) {
    console.error(`openapi: ${path} is INVALID: ${e.message}`);
    failed++;
    continue;
  }
  const broken = structuredClone(doc);
  if (!breakFirstRef(broken.paths)) {
    console.error(`openapi: ${path} has no $ref under paths to break`);
    failed++;
    continue;
  }
  try {
    await SwaggerParser.validate(broken);
    console.error(`openapi: the validator accepted a broken ${path}; it is not checking`);
    failed++;
  } catch {
    console.log(`openapi: a broken copy of ${path} is rejected, as it must be`);
    passed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
