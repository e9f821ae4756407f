/**
 * Building blocks of the daemons' config schemas (TypeBox, i.e. JSON Schema with a TypeScript type).
 * Each schema states a field once: its type, range, default and description; the TypeScript type of
 * the loaded config is `Static<typeof Schema>` and the published JSON Schema (deploy/schema/) is the
 * same object. A property with a `default` may be left out of a file (it is not `required`), yet its
 * static type is not optional: the loader fills it in before anyone reads it.
 */
import { OptionalKind, type Static, type TObject, type TProperties, type TSchema, Type } from "@sinclair/typebox";
import type { TlsConfig } from "../tls";

/** A port, 0 to 65535 (0: the daemon picks a free one), without leading zeros. */
const PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)";
/** host:port (a host name or IPv4 address without spaces), or [IPv6]:port. */
const HOST_PORT = `[^:\\s\\[\\]]+:${PORT}|\\[[0-9a-fA-F:]+\\]:${PORT}`;
export const HOST_PORT_PATTERN = `^(?:${HOST_PORT})$`;
export const HOST_PORT_OR_EMPTY_PATTERN = `^(?:|${HOST_PORT})$`;

/** True when a property may be left out of a file: optional, or filled in from its default. */
function mayBeOmitted(s: TSchema): boolean {
  return "default" in s || OptionalKind in s;
}

/**
 * An object that refuses unknown keys. Properties with a default are not required; a block whose
 * properties may all be left out gets `default: {}` itself, so the whole block may be left out.
 */
export function block<P extends TProperties>(description: string, properties: P): TObject<P> {
  const o = Type.Object(properties, { additionalProperties: false, description });
  const json = o as { required?: string[]; default?: unknown };
  const required = (json.required ?? []).filter((k) => !mayBeOmitted(properties[k] as TSchema));
  if (required.length) json.required = required;
  else {
    delete json.required;
    json.default = {};
  }
  return o;
}

/** An integer in [min, max]; `def` is its default (omit for a field without one). */
export function int(description: string, min: number, max: number, def?: number) {
  return Type.Integer({ description, minimum: min, maximum: max, ...(def !== undefined ? { default: def } : {}) });
}

/** A non-empty string; `def` is its default (omit for a required field). */
export function text(description: string, def?: string) {
  return Type.String({ description, minLength: 1, ...(def !== undefined ? { default: def } : {}) });
}

/** A string that may be empty ("" = not set). */
export function optionalText(description: string) {
  return Type.String({ description, default: "" });
}

/** host:port; `orEmpty`: "" is allowed too (meaning off / not set). */
export function hostPort(description: string, def: string, orEmpty = false) {
  return Type.String({
    description,
    pattern: orEmpty ? HOST_PORT_OR_EMPTY_PATTERN : HOST_PORT_PATTERN,
    default: def,
  });
}

/** The `tls` block both daemons share: PEM files for mutual TLS, or plaintext when asked for by name. */
export const TlsSchema = block(
  "Mutual TLS between the parts: ca, cert and key are required unless insecure is true (tests only).",
  {
    ca: Type.Optional(Type.String({ description: "PEM file of the CA that signs every part's certificate." })),
    cert: Type.Optional(Type.String({ description: "PEM certificate of this part." })),
    key: Type.Optional(Type.String({ description: "PEM private key of this part." })),
    insecure: Type.Boolean({ description: "Plaintext, no authentication: only for tests.", default: false }),
  },
);

/** The root of a daemon's schema: `$schema` (for editors) is the only key allowed beyond `properties`. */
export function daemonSchema<P extends TProperties>(title: string, properties: P) {
  const root = block(title, {
    $schema: Type.Optional(Type.String({ description: "The JSON Schema of this file (for editors)." })),
    ...properties,
  });
  delete (root as { default?: unknown; description?: string }).default;
  delete (root as { description?: string }).description;
  return Object.assign(root, { $schema: "http://json-schema.org/draft-07/schema#", title });
}

/** The JSON Schema file of a daemon schema (deploy/schema/*.schema.json): `$schema` and `title` first. */
export function schemaFile(schema: TSchema): string {
  const { $schema, title, ...rest } = schema;
  return `${JSON.stringify({ $schema, title, ...rest }, null, 2)}\n`;
}

/** The file's own `$schema` key is for editors only: not part of the loaded config. */
export type Loaded<S extends TSchema> = Omit<Static<S>, "$schema">;

/**
 * The loaded `tls` block as the gRPC code takes it ("" = not set), once the rule both daemons share
 * holds: ca, cert and key are all given, unless insecure is asked for by name.
 */
export function checkedTls(tls: Static<typeof TlsSchema>, fail: (msg: string) => never): TlsConfig {
  const { ca, cert, key, insecure } = tls;
  if (!insecure && (!ca || !cert || !key)) {
    fail("tls.ca, tls.cert and tls.key are required (mutual TLS between parts); tls.insecure: true only for tests");
  }
  return { insecure, ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}
