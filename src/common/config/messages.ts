/**
 * Ajv's validation errors turned into messages a person can act on: each names the field by its
 * dotted path (and the flag that sets it, if any), says what the field must be in the words of its
 * schema (an integer in [min, max], a non-empty string, host:port), and an unknown key comes with the
 * nearest known one ("did you mean chunkSizeBytes?").
 */
import type { ErrorObject } from "ajv";
import { HOST_PORT_OR_EMPTY_PATTERN, HOST_PORT_PATTERN } from "./fields";

/** Dotted path of an Ajv instance path ("/limits/chunkSizeBytes" → "limits.chunkSizeBytes"). */
export function dottedPath(instancePath: string, key?: string): string {
  const parts = instancePath
    .split("/")
    .slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (key !== undefined) parts.push(key);
  return parts.join(".");
}

/** Edit distance (insertions, deletions, substitutions), for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The known key nearest to `key`, if it is near enough to be a typo of it. */
export function nearest(key: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const k of known) {
    const a = key.toLowerCase();
    const b = k.toLowerCase();
    const prefix = Math.min(a.length, b.length) >= 4 && (a.startsWith(b) || b.startsWith(a));
    const d = a === b ? 0 : prefix ? 1 : distance(key, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(key.length / 4)) ? best : undefined;
}

/** Schema fields the messages read (Ajv's `parentSchema` with `verbose: true`). */
interface FieldSchema {
  type?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  pattern?: string;
  properties?: Record<string, FieldSchema>;
  required?: string[];
}

/**
 * One message per failing field. `label(path)` names a field (e.g. adds "(--cluster-name)").
 */
export function describeErrors(errors: ErrorObject[], label: (path: string) => string): string[] {
  const out: string[] = [];
  for (const e of errors) {
    const m = describe(e, label);
    if (!out.includes(m)) out.push(m);
  }
  return out;
}

function describe(e: ErrorObject, label: (path: string) => string): string {
  const s = (e.parentSchema ?? {}) as FieldSchema;
  const here = dottedPath(e.instancePath);
  const name = here === "" ? "the file" : label(here);
  switch (e.keyword) {
    case "additionalProperties": {
      const key = String(e.params.additionalProperty);
      const hint = nearest(key, Object.keys(s.properties ?? {}));
      return `${dottedPath(e.instancePath, key)}: unknown key${hint ? ` (did you mean ${hint}?)` : ""}`;
    }
    case "required": {
      const key = String(e.params.missingProperty);
      const path = dottedPath(e.instancePath, key);
      const inner = s.properties?.[key]?.required?.map((k) => `${path}.${k}`);
      return `${label(path)} is required${inner?.length ? ` (with ${inner.join(", ")})` : ""}`;
    }
    case "pattern":
      if (s.pattern === HOST_PORT_PATTERN || s.pattern === HOST_PORT_OR_EMPTY_PATTERN) {
        return `${name} "${String(e.data)}" must be host:port${s.pattern === HOST_PORT_OR_EMPTY_PATTERN ? ' (or "")' : ""}`;
      }
      return `${name} "${String(e.data)}" must match ${s.pattern}`;
  }
  if (s.type === "integer") {
    const range = s.minimum !== undefined && s.maximum !== undefined ? ` in [${s.minimum}, ${s.maximum}]` : "";
    return `${name} must be an integer${range}`;
  }
  if (s.type === "string") return `${name} must be a ${s.minLength ? "non-empty " : ""}string`;
  if (s.type === "boolean") return `${name} must be true or false`;
  if (s.type === "object") return here === "" ? "the file must hold a JSON object" : `${name} must be an object`;
  return `${name} ${e.message ?? "is invalid"}`;
}
