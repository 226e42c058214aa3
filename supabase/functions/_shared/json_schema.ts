// JSON Schema validation (draft 2020-12, Ajv) with readable error lists, and the conversion of a JSON
// Schema to the OpenAPI subset Gemini's `responseSchema` accepts.
import { Ajv2020 } from "npm:ajv@8.20.0/dist/2020.js";

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: string[] };
export type Validator<T> = (value: unknown) => Validation<T>;

// strictRequired/strictTypes are off: the per-decision if/then rules name keys and types declared one
// level up, which is plain JSON Schema but not what Ajv's strict mode expects.
const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, strictTypes: false });

export function compileValidator<T>(schema: Record<string, unknown>): Validator<T> {
  const validate = ajv.compile(schema);
  return (value: unknown): Validation<T> => {
    if (validate(value)) return { ok: true, value: value as T };
    const errors = (validate.errors ?? [])
      // "must match 'then' schema" only repeats the specific error reported next to it.
      .filter((error) => error.keyword !== "if")
      .map((error) => {
        const path = error.instancePath === "" ? "(root)" : error.instancePath.slice(1).replaceAll("/", ".");
        const allowed = error.keyword === "enum" ? `: ${(error.params.allowedValues as unknown[]).join(", ")}` : "";
        const extra = error.keyword === "additionalProperties" ? ` '${error.params.additionalProperty}'` : "";
        return `${path} ${error.message}${extra}${allowed}`;
      });
    return { ok: false, errors: [...new Set(errors)] };
  };
}

// Fields of Gemini's Schema object (generativelanguage v1beta `Schema`); anything else is dropped.
const GEMINI_PASSTHROUGH = new Set([
  "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "required", "minProperties",
  "maxProperties", "minLength", "maxLength", "pattern", "minimum", "maximum",
]);

/**
 * Derive Gemini's responseSchema from a JSON Schema: upper-case types, propertyOrdering from the declared
 * order, and no keywords Gemini rejects ($schema, $id, additionalProperties, allOf/if/then, exclusive bounds).
 * Rules that only the validator enforces must therefore also be stated in the prompt.
 */
export function toGeminiSchema(schema: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "type") out.type = String(value).toUpperCase();
    else if (key === "properties") {
      const properties = value as Record<string, Record<string, unknown>>;
      out.properties = Object.fromEntries(Object.entries(properties).map(([name, sub]) => [name, toGeminiSchema(sub)]));
      out.propertyOrdering = Object.keys(properties);
    } else if (key === "items") out.items = toGeminiSchema(value as Record<string, unknown>);
    else if (key === "exclusiveMinimum" && out.minimum === undefined) out.minimum = value;
    else if (key === "exclusiveMaximum" && out.maximum === undefined) out.maximum = value;
    else if (GEMINI_PASSTHROUGH.has(key)) out[key] = value;
  }
  return out;
}
