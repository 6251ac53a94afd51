// What the OpenAPI documents say, checked against what the front does and
// against the proto3 JSON mapping; and the generator's refusals.
//
// - The front's document (front.proto's annotations): every route lists
//   exactly the statuses the front answers (front/routes.c,
//   front/order_write.c, front/order_events.c), with the headers each
//   answer carries (Location, ETag, Retry-After) and the request headers it
//   reads (Idempotency-Key, If-None-Match); bodies, required fields and
//   limits hold for real request bodies (ajv, a JSON-schema validator);
//   every component is used and every $ref resolves; `security: []`.
// - The shapes document (proto/acme/shapes/v1, not the shop's): maps are
//   objects, a oneof admits one member or none, well-known types have their
//   JSON forms, two packages' Item stay apart.
// - The generator (the real protoc with the plugin) on small protos: works
//   without front.proto or http_api, and refuses broken annotations with a
//   message naming the problem.
//
//   node contract.mjs --front F.json --shapes S.json --protoc P --plugin G
//                     --proto-root DIR --google-root DIR
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import Ajv from "ajv";

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
}
for (const k of ["front", "shapes", "protoc", "plugin", "proto-root", "google-root"]) {
  if (!args[k]) {
    console.error(`usage: node contract.mjs --${k} ... (see the file's comment)`);
    process.exit(2);
  }
}
const front = JSON.parse(readFileSync(args.front, "utf8"));
const shapes = JSON.parse(readFileSync(args.shapes, "utf8"));

// The object a "#/a/b" pointer names in doc.
function resolve(doc, ref) {
  assert.match(ref, /^#\//, `only local $refs: ${ref}`);
  let node = doc;
  for (const part of ref.slice(2).split("/")) {
    node = node?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  assert.notEqual(node, undefined, `dangling $ref ${ref}`);
  return node;
}

// obj, or what its $ref names.
function deref(doc, obj) {
  return obj?.$ref ? deref(doc, resolve(doc, obj.$ref)) : obj;
}

// A validator for the schema at ref (JSON Schema, OpenAPI's `nullable` aside).
function validator(doc, ref) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ ...doc, $id: "doc" }, "doc");
  return ajv.getSchema(`doc${ref}`);
}

function op(doc, verb, path) {
  const o = doc.paths[path]?.[verb];
  assert.ok(o, `${verb.toUpperCase()} ${path} is documented`);
  return o;
}

function response(doc, verb, path, status) {
  const r = deref(doc, op(doc, verb, path).responses[status]);
  assert.ok(r, `${verb.toUpperCase()} ${path} documents ${status}`);
  return r;
}

function bodyRef(doc, verb, path, status) {
  return response(doc, verb, path, status).content?.["application/json"]?.schema?.$ref;
}

function headers(doc, verb, path, status) {
  const h = response(doc, verb, path, status).headers ?? {};
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, deref(doc, v)]));
}

describe("the front's document says what the front answers", () => {
  // Every status each route really answers, and no other (405 for other
  // methods is said once, in info.description).
  const statuses = {
    "get /inventory": ["200", "304", "400", "503", "504"],
    "get /order/{id}": ["200", "400", "404", "503", "504"],
    "post /order": ["201", "202", "400", "413", "415", "422", "503", "504"],
    "delete /order/{id}": ["200", "202", "400", "404", "503", "504"],
    "get /events": ["200", "400", "503", "504"],
    "get /healthz": ["200", "400", "503"],
    "get /readyz": ["200", "400", "503"],
  };

  test("routes and statuses", () => {
    const seen = {};
    for (const [path, ops] of Object.entries(front.paths)) {
      for (const [verb, o] of Object.entries(ops)) {
        seen[`${verb} ${path}`] = Object.keys(o.responses).sort();
      }
    }
    assert.deepEqual(seen, statuses);
  });

  test("POST /order: 201 and 202 with Location, 422 for a reused key", () => {
    for (const st of ["201", "202"]) {
      assert.equal(bodyRef(front, "post", "/order", st), "#/components/schemas/PlaceOrderResponse");
      const h = headers(front, "post", "/order", st);
      assert.equal(h.Location?.required, true, `${st} carries Location`);
      assert.equal(h.Location.schema.format, "uri-reference");
    }
    assert.match(response(front, "post", "/order", "422").description, /IDEMPOTENCY_KEY_REUSED/);
    for (const st of ["400", "413", "415", "422", "503", "504"]) {
      assert.equal(bodyRef(front, "post", "/order", st), "#/components/schemas/ErrorBody", st);
    }
  });

  test("POST /order reads Idempotency-Key: 1..200 printable ASCII, optional", () => {
    const params = op(front, "post", "/order").parameters.map((p) => deref(front, p));
    const key = params.find((p) => p.name === "Idempotency-Key");
    assert.equal(key.in, "header");
    assert.equal(key.required, false);
    assert.equal(key.schema.minLength, 1);
    assert.equal(key.schema.maxLength, 200);
    // The same rule as front/order_id.c: bytes 0x20..0x7e.
    const re = new RegExp(key.schema.pattern);
    assert.ok(re.test("k".repeat(200)) && re.test("a b~!"));
    assert.ok(!re.test("tab\there") && !re.test("caf\u00e9") && !re.test("\u007f"));
    assert.deepEqual(params.map((p) => p.name), ["Idempotency-Key"], "the body is not a parameter");
  });

  test("DELETE /order/{id}: 200 the order, 202 queued with Location, 404 unknown", () => {
    assert.equal(bodyRef(front, "delete", "/order/{id}", "200"), "#/components/schemas/Order");
    assert.equal(bodyRef(front, "delete", "/order/{id}", "202"), "#/components/schemas/CancelOrderResponse");
    assert.equal(headers(front, "delete", "/order/{id}", "202").Location?.required, true);
    assert.equal(bodyRef(front, "delete", "/order/{id}", "404"), "#/components/schemas/ErrorBody");
  });

  test("GET /inventory: ETag on 200 and 304, If-None-Match, 304 without a body", () => {
    for (const st of ["200", "304"]) {
      assert.equal(headers(front, "get", "/inventory", st).ETag?.required, true, st);
    }
    assert.equal(response(front, "get", "/inventory", "304").content, undefined);
    const body = response(front, "get", "/inventory", "200").content["application/json"].schema;
    assert.equal(body.type, "array");
    assert.equal(body.items.$ref, "#/components/schemas/Product");
    const inm = op(front, "get", "/inventory").parameters.map((p) => deref(front, p));
    assert.deepEqual(inm.map((p) => [p.name, p.in, p.required]), [["If-None-Match", "header", false]]);
  });

  test("Retry-After on every 503, and on 504 where the front sends it", () => {
    for (const [route, list] of Object.entries(statuses)) {
      const [verb, path] = route.split(" ");
      for (const st of list.filter((s) => s === "503" || s === "504")) {
        // routes.c answers a read's 504 (an RPC deadline) without Retry-After.
        const want = !(st === "504" && verb === "get" && path !== "/events");
        const h = headers(front, verb, path, st)["Retry-After"];
        assert.equal(h !== undefined, want, `${route} ${st} Retry-After`);
        if (want) {
          assert.equal(h.required, true);
          assert.equal(h.schema.type, "integer");
        }
      }
    }
  });

  test("a malformed HTTP request gets an ErrorBody; /readyz's 503 is a HealthResponse", () => {
    for (const path of ["/inventory", "/healthz", "/readyz"]) {
      assert.equal(bodyRef(front, "get", path, "400"), "#/components/schemas/ErrorBody", path);
    }
    assert.equal(bodyRef(front, "get", "/readyz", "503"), "#/components/schemas/HealthResponse");
    const events = response(front, "get", "/events", "200");
    assert.deepEqual(Object.keys(events.content), ["text/event-stream"]);
  });

  test("required fields and limits hold for real bodies", () => {
    const s = front.components.schemas;
    assert.deepEqual(s.PlaceOrderRequest.required, ["items"]);
    assert.deepEqual(s.OrderItem.required, ["inventory_id", "count"]);
    assert.deepEqual(s.ErrorBody.required, ["code", "message"]);
    assert.deepEqual(s.PlaceOrderResponse.required, ["order_id", "status"]);
    // An Order always has its id and status; it may lack items (order.proto).
    assert.deepEqual(s.Order.required, ["id", "status"]);
    // What the storefront reads (front/static): the contract's limits.
    assert.equal(s.PlaceOrderRequest.properties.items.maxItems, 100);
    assert.equal(s.OrderItem.properties.count.maximum, 1000);
    const place = validator(front, "#/components/schemas/PlaceOrderRequest");
    const item = { inventory_id: 1, count: 2 };
    assert.ok(place({ items: [item] }), JSON.stringify(place.errors));
    for (const bad of [{}, { items: [] }, { items: [{ count: 1 }] }, { items: [{ ...item, count: 0 }] },
      { items: [{ ...item, count: 1001 }] }, { items: Array(101).fill(item) }]) {
      assert.ok(!place(bad), `refused: ${JSON.stringify(bad).slice(0, 60)}`);
    }
    const err = validator(front, "#/components/schemas/ErrorBody");
    assert.ok(err({ code: "IDEMPOTENCY_KEY_REUSED", message: "m" }));
    assert.ok(!err({ message: "m" }));
  });

  test("security: [] (the API asks for no credentials), version and license", () => {
    assert.deepEqual(front.security, []);
    assert.match(front.info.version, /^\d+\.\d+\.\d+/);
    assert.equal(front.info.license.name, "MIT");
    assert.ok(front.tags.every((t) => t.description), "every tag is described");
  });
});

// Every $ref under node, and (transitively) under what they name.
function usedComponents(doc) {
  const used = new Set();
  const walk = (node) => {
    if (node === null || typeof node !== "object") {
      return;
    }
    if (typeof node.$ref === "string" && !used.has(node.$ref)) {
      used.add(node.$ref);
      walk(resolve(doc, node.$ref));
    }
    Object.values(node).forEach(walk);
  };
  walk(doc.paths);
  return used;
}

describe("every component is used and every $ref resolves", () => {
  for (const [name, doc] of [["front", front], ["shapes", shapes]]) {
    test(name, () => {
      const used = usedComponents(doc);
      for (const [kind, members] of Object.entries(doc.components)) {
        for (const key of Object.keys(members)) {
          assert.ok(used.has(`#/components/${kind}/${key}`), `${kind}/${key} is used`);
        }
      }
    });
  }
});

describe("the shapes document follows the proto3 JSON mapping", () => {
  const S = "#/components/schemas/";
  const shape = validator(shapes, `${S}Shape`);

  test("maps are JSON objects", () => {
    const props = shapes.components.schemas.Shape.properties;
    assert.deepEqual(props.labels.additionalProperties, { type: "string" });
    assert.equal(props.items.additionalProperties.$ref, `${S}acme.shapes.v1.Item`);
    assert.ok(shape({ id: "a", labels: { en: "x" }, items: { 7: { name: "n" } } }));
    assert.ok(!shape({ id: "a", labels: [{ key: "en", value: "x" }] }), "not a list of entries");
    assert.ok(!shape({ id: "a", labels: { en: 5 } }));
  });

  test("a oneof admits one member or none", () => {
    assert.ok(shape({ id: "a" }));
    assert.ok(shape({ id: "a", radius: 1 }));
    assert.ok(shape({ id: "a", polygon: { corners: [{ x: 1, y: 2 }] }, team: "t" }));
    assert.ok(!shape({ id: "a", radius: 1, side: 2 }));
    assert.ok(!shape({ id: "a", user: "u", team: "t" }));
    assert.ok(!shape({ radius: 1 }), "id is required");
    assert.match(shapes.components.schemas.Shape.properties.side.description, /oneof `kind`/);
  });

  test("well-known types in their JSON forms", () => {
    const p = shapes.components.schemas.Shape.properties;
    assert.equal(p.drawn_at.format, "date-time");
    assert.ok(new RegExp(p.took.pattern).test("1.5s") && !new RegExp(p.took.pattern).test("1.5"));
    assert.equal(p.weight.nullable, true);
    assert.equal(p.attributes.additionalProperties, true);
    assert.equal(p.parts.items.$ref, `${S}acme.parts.v1.Item`);
    assert.ok(shape({ id: "a", drawn_at: "2024-01-01T00:00:00Z", took: "2s", attributes: { k: [1] } }));
    const ping = response(shapes, "get", "/ping", "200").content["application/json"].schema;
    assert.deepEqual(ping, { type: "object" }, "google.protobuf.Empty inline");
    assert.ok(!Object.keys(shapes.components.schemas).some((k) => k.includes("google")));
  });

  test("names: nested types, and a name two packages use", () => {
    const names = Object.keys(shapes.components.schemas).sort();
    assert.deepEqual(names, ["Color", "Polygon", "Problem", "Shape", "Shape.Point",
      "acme.parts.v1.Item", "acme.shapes.v1.Item"]);
  });

  test("path, query and body parameters; shared answers and headers", () => {
    const list = op(shapes, "get", "/drawings/{drawing}/shapes");
    const params = list.parameters.map((p) => deref(shapes, p));
    assert.deepEqual(params.map((p) => [p.name, p.in]), [["drawing", "path"], ["colors", "query"],
      ["page_size", "query"], ["X-Request-Id", "header"]]);
    assert.equal(params[1].schema.type, "array");
    const put = op(shapes, "post", "/drawings/{drawing}/shapes");
    assert.equal(put.requestBody.content["application/json"].schema.allOf[0].$ref, `${S}Shape`);
    assert.deepEqual(Object.keys(put.responses), ["201", "400", "409"]);
    assert.equal(put.responses["400"].$ref, "#/components/responses/Problem");
    assert.equal(shapes.paths["/ping"].get.operationId, "Ping");
    assert.equal(Object.keys(shapes.paths).length, 2, "an unannotated method is not routed");
  });
});

describe("the generator", () => {
  const tmp = mkdtempSync(join(tmpdir(), "openapi-gen-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  let n = 0;

  // Run protoc with the plugin on a proto of package t.v1 whose body is src.
  function generate(src, opt = "flat") {
    const dir = join(tmp, `case${n++}`);
    mkdirSync(join(dir, "t", "v1"), { recursive: true });
    mkdirSync(join(dir, "out"));
    const file = join(dir, "t", "v1", "t.proto");
    writeFileSync(file, `syntax = "proto3";\npackage t.v1;\nimport "webshop/v1/http.proto";\n` +
      `message Req { string id = 1; }\nmessage Res { string name = 1; }\n${src}\n`);
    const r = spawnSync(args.protoc, [`--plugin=protoc-gen-openapi=${args.plugin}`,
      `--proto_path=${dir}`, `--proto_path=${args["proto-root"]}`,
      `--proto_path=${args["google-root"]}`, `--openapi_opt=${opt}`,
      `--openapi_out=${join(dir, "out")}`, file], { encoding: "utf8", timeout: 30000 });
    if (r.status !== 0) {
      return { error: r.stderr };
    }
    return { doc: JSON.parse(readFileSync(join(dir, "out", "t.openapi.json"), "utf8")) };
  }

  const rpc = (rule) => `service S { rpc M(Req) returns (Res) { option (webshop.v1.http) = { ${rule} }; } }`;

  test("runs on a proto with a route and nothing else", () => {
    const { doc, error } = generate(rpc(`get: "/m/{id}"`));
    assert.equal(error, undefined);
    assert.equal(doc.info.version, "0.0.0");
    assert.equal(doc.info.title, "S");
    assert.equal(doc.security, undefined, "it does not claim an API needs no credentials");
    assert.equal(doc.paths["/m/{id}"].get.responses["200"].description, "Success");
    assert.deepEqual(Object.keys(doc.components.schemas), ["Res"]);
  });

  test("put, patch and additional_bindings are operations of their own", () => {
    const { doc, error } = generate(rpc(`put: "/m/{id}" body: "*" summary: "s"
      responses: [{status: 404 description: "none"}]
      additional_bindings: {patch: "/m/{id}" body: "*"}
      additional_bindings: {get: "/n/{id}"}`));
    assert.equal(error, undefined, error);
    const put = doc.paths["/m/{id}"].put;
    const patch = doc.paths["/m/{id}"].patch;
    const get = doc.paths["/n/{id}"].get;
    assert.deepEqual([put.operationId, patch.operationId, get.operationId], ["M", "M_2", "M_3"]);
    for (const o of [put, patch, get]) {
      assert.equal(o.summary, "s", "a binding shares the rule's summary");
      assert.deepEqual(Object.keys(o.responses), ["200", "404"], "and its answers");
    }
    assert.ok(put.requestBody && patch.requestBody);
    assert.equal(get.requestBody, undefined);
  });

  const refusals = [
    ["no route at all", "service S { rpc M(Req) returns (Res); }", "no method carries"],
    ["two verbs", rpc(`get: "/a" post: "/a"`), "exactly one of get, post, put, patch, delete"],
    ["a path parameter that is no field", rpc(`get: "/a/{nope}"`), "path parameter {nope} is not a field of t.v1.Req"],
    ["unpaired braces", rpc(`get: "/a/{id"`), "pair its braces"],
    ["a body that is no field", rpc(`post: "/a" body: "nope"`), "body nope is not a field"],
    ["a response_body that is no field", rpc(`get: "/a" response_body: "nope"`), "response_body nope is not a field"],
    ["a dangling response ref", rpc(`get: "/a" responses: [{ref: "Nope"}]`), "response ref Nope: no such response"],
    ["a ref with more", `service S { option (webshop.v1.http_api) = { responses: [{name: "E" status: 400 description: "e"}] };
      rpc M(Req) returns (Res) { option (webshop.v1.http) = { get: "/a" responses: [{ref: "E" status: 401}] }; } }`,
      "response ref E sets other fields too"],
    ["a status twice", rpc(`get: "/a" responses: [{status: 400 description: "a"}, {status: 400 description: "b"}]`),
      "status 400 listed twice"],
    ["a success answer with a body", rpc(`get: "/a" responses: [{status: 200 description: "ok" body: "Req"}]`),
      "the success answer (200) sets a body"],
    ["an unknown body", rpc(`get: "/a" responses: [{status: 404 description: "x" body: "Nope"}]`), "body Nope is no message"],
    ["an answer without a description", rpc(`get: "/a" responses: [{status: 404}]`), "response 404 needs a description"],
    ["a status out of range", rpc(`get: "/a" responses: [{status: 99 description: "x"}]`), "status 99 is not 100..599"],
    ["a header of no JSON type", rpc(`get: "/a" request_headers: [{name: "X" type: "object"}]`), "type object is not string"],
    ["a dangling header ref", rpc(`get: "/a" responses: [{status: 404 description: "x" headers: [{ref: "H"}]}]`),
      "header ref H: no such header"],
    ["a shared answer without a name", `service S { option (webshop.v1.http_api) = { responses: [{status: 400 description: "e"}] };
      rpc M(Req) returns (Res) { option (webshop.v1.http) = { get: "/a" }; } }`, "needs a name"],
    ["two routes on one path and verb", `service S { rpc M(Req) returns (Res) { option (webshop.v1.http) = { get: "/a" }; }
      rpc N(Req) returns (Res) { option (webshop.v1.http) = { get: "/a" }; } }`, "M and N: both route get /a"],
  ];
  for (const [what, src, message] of refusals) {
    test(`refuses ${what}`, () => {
      const { error } = generate(src);
      assert.ok(error, "protoc failed");
      assert.ok(error.includes(message), `"${message}" in: ${error}`);
    });
  }

  test("refuses an unknown parameter", () => {
    const { error } = generate(rpc(`get: "/a"`), "flat,verison=1");
    assert.match(error ?? "", /parameter: expected flat, version=/);
  });
});
