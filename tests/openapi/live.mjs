// The front's answers against the OpenAPI document it serves: every
// documented route is called (success and the errors a test can provoke:
// 304, 400, 404, 413, 415, 422), and each real answer must be documented
// for its route with that status, carry every header the document says it
// always carries (with a value of the header's schema), have the
// documented media type, and a body that validates against the documented
// schema (ajv). 503 and 504 need a broken shop and are left to the e2e
// tests that break one. Run by tests/e2e/test_openapi_live.py against a
// running shop:
//   node live.mjs BASE_URL
import assert from "node:assert/strict";
import Ajv from "ajv";

const base = process.argv[2];
if (!base) {
  console.error("usage: node live.mjs BASE_URL");
  process.exit(2);
}
const doc = await (await fetch(`${base}/openapi.json`)).json();
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema({ ...doc, $id: "doc" }, "doc");

function deref(obj) {
  let node = obj;
  while (node?.$ref) {
    node = node.$ref.slice(2).split("/").reduce((n, p) => n?.[p.replace(/~1/g, "/")], doc);
  }
  return node;
}

// A JSON pointer into the document, for ajv.
const ptr = (...parts) => "#/" + parts.map((p) => String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("/");

// The document's answer object for a response (resolving a shared one),
// and the pointer of its schema base.
function documented(verb, tmpl, status) {
  const op = doc.paths[tmpl]?.[verb];
  assert.ok(op, `${verb.toUpperCase()} ${tmpl} is documented`);
  let at = ptr("paths", tmpl, verb, "responses", status);
  let r = op.responses[status];
  assert.ok(r, `${verb.toUpperCase()} ${tmpl} documents the ${status} it answered`);
  while (r.$ref) {
    at = r.$ref;
    r = deref({ $ref: r.$ref });
  }
  return { r, at };
}

const seen = new Set();
let checks = 0;

async function call(verb, tmpl, path, { body, headers = {}, sse = false } = {}) {
  const ctl = new AbortController();
  const res = await fetch(base + path, { method: verb.toUpperCase(), body, headers, signal: ctl.signal });
  const text = sse ? "" : await res.text();
  if (sse) ctl.abort();
  const status = String(res.status);
  const { r, at } = documented(verb, tmpl, status);
  const what = `${verb.toUpperCase()} ${path} -> ${status}`;
  for (const [name, h0] of Object.entries(r.headers ?? {})) {
    const h = deref(h0);
    const value = res.headers.get(name);
    if (h.required) assert.ok(value !== null, `${what}: header ${name} is documented as always sent`);
    if (value !== null && h.schema) {
      const v = h.schema.type === "integer" ? Number(value) : value;
      const ok = ajv.validate(h.schema, v);
      assert.ok(ok, `${what}: header ${name}: ${value}: ${JSON.stringify(ajv.errors)}`);
    }
  }
  const types = Object.keys(r.content ?? {});
  if (types.length === 0) {
    assert.equal(text, "", `${what}: the document says no body`);
  } else {
    const ct = (res.headers.get("content-type") ?? "").split(";")[0].trim();
    assert.ok(types.includes(ct), `${what}: content-type ${ct}, documented ${types}`);
    if (ct === "application/json") {
      const validate = ajv.getSchema(`doc${at}/content/application~1json/schema`);
      assert.ok(validate, `${what}: a schema at ${at}`);
      const ok = validate(JSON.parse(text));
      assert.ok(ok, `${what}: ${text.slice(0, 200)}: ${JSON.stringify(validate.errors)}`);
    }
  }
  seen.add(`${verb} ${tmpl}`);
  checks++;
  return { res, text };
}

const json = { "Content-Type": "application/json" };
const unknown = "123e4567-e89b-12d3-a456-426614174000";

const inv = await call("get", "/inventory", "/inventory");
await call("get", "/inventory", "/inventory", { headers: { "If-None-Match": inv.res.headers.get("etag") } });
const items = { items: [{ inventory_id: 1, count: 1 }] };
const key = `live-${process.pid}-${Date.now()}`;
const placed = await call("post", "/order", "/order", { body: JSON.stringify(items), headers: { ...json, "Idempotency-Key": key } });
const id = JSON.parse(placed.text).order_id;
await call("post", "/order", "/order", {
  body: JSON.stringify({ items: [{ inventory_id: 2, count: 1 }] }),
  headers: { ...json, "Idempotency-Key": key },
});
await call("post", "/order", "/order", { body: JSON.stringify({ items: [] }), headers: json });
await call("post", "/order", "/order", { body: "{", headers: json });
await call("post", "/order", "/order", { body: JSON.stringify(items), headers: { "Content-Type": "text/plain" } });
await call("post", "/order", "/order", { body: "{" + " ".repeat(70 * 1024) + "}", headers: json });
await call("get", "/order/{id}", `/order/${id}`);
await call("get", "/order/{id}", `/order/${unknown}`);
await call("get", "/order/{id}", "/order/not-a-uuid");
await call("delete", "/order/{id}", `/order/${id}`);
await call("delete", "/order/{id}", `/order/${id}`);
await call("delete", "/order/{id}", `/order/${unknown}`);
await call("delete", "/order/{id}", "/order/1234");
await call("get", "/events", `/events?orders=${id}&stock=true`, { sse: true });
await call("get", "/events", "/events?orders=nope");
await call("get", "/healthz", "/healthz");
await call("get", "/readyz", "/readyz");

for (const [tmpl, ops] of Object.entries(doc.paths)) {
  for (const verb of Object.keys(ops)) {
    if (["get", "post", "put", "patch", "delete"].includes(verb)) {
      assert.ok(seen.has(`${verb} ${tmpl}`), `${verb.toUpperCase()} ${tmpl} was never called`);
    }
  }
}
console.log(`${checks} passed, 0 failed`);
