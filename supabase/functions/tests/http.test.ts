// The one body reader every function uses: strict UTF-8 and Unicode, finite numbers, bounded depth, a 400
// naming the field; no stack needed.
import assert from "node:assert/strict";
import { HttpError, readJsonObject } from "../_shared/http.ts";

function request(body: string | Uint8Array<ArrayBuffer>, contentType = "application/json"): Request {
  return new Request("http://localhost/fn", { method: "POST", headers: { "content-type": contentType }, body });
}

async function refusal(body: string | Uint8Array<ArrayBuffer>, contentType?: string, maxBytes = 1024): Promise<HttpError> {
  try {
    await readJsonObject(request(body, contentType), maxBytes);
  } catch (error) {
    assert.ok(error instanceof HttpError, String(error));
    return error;
  }
  throw new Error(`accepted: ${typeof body === "string" ? body : "bytes"}`);
}

Deno.test("body reader: well-formed Unicode, emoji included, passes unchanged", async () => {
  const body = await readJsonObject(request('{"description": "Buy \\ud83d\\ude80 when RSI < 30", "n": 1.5}'), 1024);
  assert.deepEqual(body, { description: "Buy \u{1F680} when RSI < 30", n: 1.5 });
});

Deno.test("body reader: a lone surrogate is a 400 naming the field", async () => {
  for (const [json, field] of [
    ['{"description": "Buy \\ud800 now"}', "description"],
    ['{"a": {"b": ["ok", "\\udfff"]}}', "a.b[1]"],
    ['{"conversation": [{"role": "user", "text": "x\\ud83d"}]}', "conversation[0].text"],
  ]) {
    const error = await refusal(json);
    assert.deepEqual([error.status, error.code], [400, "invalid_body"]);
    assert.ok(error.message.startsWith(`${field} must be well-formed Unicode`), error.message);
  }
  const key = await refusal('{"x\\ud800": 1}');
  assert.ok(key.message.includes("key") && key.message.includes("well-formed Unicode"), key.message);
});

Deno.test("body reader: invalid UTF-8 bytes are a 400 naming the field, never decoded mangled", async () => {
  const encoder = new TextEncoder();
  const bytes = new Uint8Array([...encoder.encode('{"name": "ok", "description": "Buy '), 0xc3, 0x28, ...encoder.encode(' dip"}')]);
  const error = await refusal(bytes);
  assert.deepEqual([error.status, error.code, error.message], [400, "invalid_body", "description must be valid UTF-8"]);
  assert.equal((await refusal(new Uint8Array([0x7b, 0xff, 0x7d]))).message, "the body is not valid UTF-8");
});

Deno.test("body reader: NUL, non-finite numbers and deep nesting are 400s naming the field", async () => {
  assert.ok((await refusal('{"question": "why\\u0000"}')).message.startsWith("question must not contain control characters"));
  assert.equal((await refusal('{"leaseSecs": 1e999}')).message, "leaseSecs must be a finite number");
  assert.equal((await refusal('{"x": [-1e400]}')).message, "x[0] must be a finite number");
  const deep = `{"x": ${"[".repeat(40)}${"]".repeat(40)}}`;
  assert.ok((await refusal(deep)).message.includes("nests deeper than 32 levels"));
});

Deno.test("body reader: size, type and shape", async () => {
  assert.equal((await refusal("{}".padEnd(2000), "application/json")).status, 413);
  assert.equal((await refusal("{}", "text/plain")).status, 400);
  assert.equal((await refusal("[1]")).message, "the body must be a JSON object");
  assert.ok((await refusal("{nope")).message.startsWith("the body is not valid JSON"));
});
