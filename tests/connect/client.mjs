// A Connect client nobody here wrote: @connectrpc/connect-node with the
// code @bufbuild/protoc-gen-es generated from proto/ (the caller runs
// protoc and passes the output dir). Reads a JSON list of calls on stdin,
//   [{"service": "webshop.v1.Inventory", "method": "GetCatalog",
//     "request": {...}, "timeoutMs": 500}]
// makes each over the Connect protocol (JSON, or the binary encoding with
// --binary) and prints one JSON list of outcomes on stdout, in order:
//   {"response": <proto3 JSON, defaults emitted>} or
//   {"error": {"code": "not_found", "message": "..."}}.
// Usage: node client.mjs BASE_URL GEN_DIR [--binary] < calls.json
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { fromJson, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const [baseUrl, genDir, ...flags] = process.argv.slice(2);
if (!baseUrl || !genDir) {
  console.error("usage: node client.mjs BASE_URL GEN_DIR [--binary] < calls.json");
  process.exit(2);
}

// Every service of every generated file, by its full name.
async function loadServices(dir) {
  const services = new Map();
  for (const name of readdirSync(dir)) {
    if (!name.endsWith("_pb.js")) continue;
    const mod = await import(pathToFileURL(join(dir, name)).href);
    for (const value of Object.values(mod)) {
      if (value && value.kind === "service") services.set(value.typeName, value);
    }
  }
  return services;
}

// Code.NotFound -> "not_found", as the Connect protocol spells it.
function codeName(code) {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

const services = await loadServices(join(genDir, "webshop", "v1"));
const transport = createConnectTransport({
  baseUrl,
  httpVersion: "1.1",
  useBinaryFormat: flags.includes("--binary"),
});
const calls = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const call of calls) {
  const svc = services.get(call.service);
  if (!svc) throw new Error(`no generated service ${call.service}`);
  const method = svc.methods.find((m) => m.name === call.method);
  if (!method) throw new Error(`${call.service} has no method ${call.method}`);
  const client = createClient(svc, transport);
  try {
    const req = fromJson(method.input, call.request ?? {});
    const opts = call.timeoutMs ? { timeoutMs: call.timeoutMs } : {};
    const resp = await client[method.localName](req, opts);
    out.push({ response: toJson(method.output, resp, { alwaysEmitImplicit: true }) });
  } catch (e) {
    const err = ConnectError.from(e);
    out.push({ error: { code: codeName(err.code), message: err.rawMessage } });
  }
}
process.stdout.write(JSON.stringify(out) + "\n");
