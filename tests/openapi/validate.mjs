// Validate an OpenAPI document with a real validator (@apidevtools/swagger-parser,
// which checks it against the OpenAPI 3.0 JSON schema and resolves every $ref).
// Also proves the validator is live by feeding it a broken copy, which must fail.
//   node validate.mjs path/to/openapi.json
import { readFileSync } from "node:fs";
import SwaggerParser from "@apidevtools/swagger-parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs OPENAPI.json");
  process.exit(2);
}
const doc = JSON.parse(readFileSync(path, "utf8"));
try {
  const api = await SwaggerParser.validate(structuredClone(doc));
  const ops = Object.values(api.paths).reduce((n, p) => n + Object.keys(p).length, 0);
  console.log(`openapi: ${path} is valid OpenAPI ${api.openapi} (${ops} operations)`);
} catch (e) {
  console.error(`openapi: ${path} is INVALID: ${e.message}`);
  process.exit(1);
}
const broken = structuredClone(doc);
broken.paths["/inventory"].get.responses["200"].content["application/json"].schema = {
  $ref: "#/components/schemas/NoSuchSchema",
};
try {
  await SwaggerParser.validate(broken);
  console.error("openapi: the validator accepted a broken document; it is not checking");
  process.exit(1);
} catch {
  console.log("openapi: a broken copy is rejected, as it must be");
}
console.log("1 passed, 0 failed");
