/**
 * Loading a daemon's configuration: the JSON file named by --config (-c), then the flags that
 * override single fields of it, then one validation against the daemon's schema (Ajv), which also
 * fills in every default. Unknown keys, wrong types and values out of range are refused with a
 * message naming the field (and its flag); rules that span fields are the caller's, after this.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { TSchema } from "@sinclair/typebox";
import Ajv, { type ValidateFunction } from "ajv";
import type { Loaded } from "./fields";
import { describeErrors } from "./messages";

/** A flag that sets one field of the file: `path` is dotted ("cluster.name"). */
export interface FlagSpec {
  path: string;
  /**
   * "string" (default); "boolean": a switch that sets true; "number": the value is read with Number();
   * "list": an array of strings, the flag repeated and/or comma-separated (empty items dropped).
   */
  kind?: "string" | "boolean" | "number" | "list";
  /** Other fields the flag stands in for: removed from the file when the flag is given. */
  replaces?: string[];
  /** What --help says of it, when the field's own description does not fit the flag. */
  help?: string;
}

export interface DaemonConfigSpec<S extends TSchema> {
  /** "agent" or "coordinator": every message starts with "<who> config: ". */
  who: string;
  schema: S;
  /** Flag name (without "--") → the field it sets. */
  flags: Record<string, FlagSpec>;
}

/** A configuration that cannot be used: the message names the field. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** The `--help` of a daemon: `message` is the text to print. */
export class ConfigHelp extends Error {
  override readonly name = "ConfigHelp";
}

const validators = new WeakMap<TSchema, ValidateFunction>();

function validator(schema: TSchema): ValidateFunction {
  let v = validators.get(schema);
  if (!v) {
    const ajv = new Ajv({ useDefaults: true, allErrors: true, verbose: true, strict: true });
    v = ajv.compile(schema);
    validators.set(schema, v);
  }
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Sets `obj.a.b.c = value` (removes it when `value` is undefined), creating missing objects; a
 * non-object on the way is left to validation.
 */
function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (o[k] === undefined) o[k] = {};
    const next = o[k];
    if (!isObject(next)) return;
    o = next;
  }
  if (value === undefined) delete o[keys.at(-1) as string];
  else o[keys.at(-1) as string] = value;
}

/** The value a flag sets, from what parseArgs read. */
function flagValue(f: FlagSpec, v: string | boolean | Array<string | boolean>): unknown {
  if (f.kind === "number") return Number(v);
  if (f.kind === "list")
    return [v]
      .flat()
      .flatMap((item) => String(item).split(","))
      .map((item) => item.trim())
      .filter((item) => item !== "");
  return v;
}

function readJson(file: string, fail: (msg: string) => never): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    return fail(`cannot read ${file}: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) return fail(`${file} must hold a JSON object`);
  return parsed;
}

/** The failure function of one daemon: throws ConfigError("<who> config: <msg>"). */
export function configFailure(who: string): (msg: string) => never {
  return (msg) => {
    throw new ConfigError(`${who} config: ${msg}`);
  };
}

/**
 * Reads and checks a daemon's configuration from its command line. Throws ConfigError (message
 * naming the fields) or, for --help/-h, ConfigHelp (message = the flags' help).
 */
export function loadConfig<S extends TSchema>(spec: DaemonConfigSpec<S>, argv: string[]): Loaded<S> {
  const fail = configFailure(spec.who);
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {
    config: { type: "string", short: "c" },
    help: { type: "boolean", short: "h" },
  };
  for (const [flag, f] of Object.entries(spec.flags))
    options[flag] = {
      type: f.kind === "boolean" ? "boolean" : "string",
      ...(f.kind === "list" ? { multiple: true } : {}),
    };
  const { values } = parseArgs({ args: argv, options, strict: true });
  if (values.help) throw new ConfigHelp(flagsHelp(spec));

  const raw = typeof values.config === "string" ? readJson(values.config, fail) : {};
  for (const [flag, f] of Object.entries(spec.flags)) {
    const v = values[flag];
    if (v === undefined) continue;
    for (const other of f.replaces ?? []) setPath(raw, other, undefined);
    setPath(raw, f.path, flagValue(f, v));
  }
  const validate = validator(spec.schema);
  if (!validate(raw)) {
    const byPath = new Map(Object.entries(spec.flags).map(([flag, f]) => [f.path, flag]));
    const flagOf = (path: string) => byPath.get(path) ?? byPath.get(path.replace(/\.\d+$/, "")); // a list's item
    const label = (path: string) => (flagOf(path) ? `${path} (--${flagOf(path)})` : path);
    fail(describeErrors(validate.errors ?? [], label).join("; "));
  }
  const { $schema: _editorsOnly, ...loaded } = raw;
  return loaded as Loaded<S>;
}

/** The schema of the field at a dotted path, if the schema has one. */
function fieldSchema(schema: TSchema, path: string): TSchema | undefined {
  let s: TSchema | undefined = schema;
  for (const k of path.split(".")) s = s?.properties?.[k];
  return s;
}

/** `--help` of a daemon: its flags, each with the field it sets, its description and default. */
export function flagsHelp<S extends TSchema>(spec: DaemonConfigSpec<S>): string {
  const rows: Array<[string, string]> = [["-c, --config FILE", "the JSON configuration file (its fields: see below)"]];
  for (const [flag, f] of Object.entries(spec.flags)) {
    const s = fieldSchema(spec.schema, f.path);
    const arg =
      f.kind === "boolean" ? "" : f.kind === "number" ? " N" : f.kind === "list" ? " VALUE[,VALUE...]" : " VALUE";
    const def = s && "default" in s && s.default !== "" ? `; default ${JSON.stringify(s.default)}` : "";
    const what = (f.help ?? s?.description ?? "").replace(/\.$/, "");
    rows.push([`--${flag}${arg}`, `${what} (${f.path}${def})`]);
  }
  rows.push(["-h, --help", "this text"]);
  const lines = rows.flatMap(([a, b]) => [`  ${a}`, `      ${b}`]);
  return [
    `usage: rbdbackup ${spec.who} [--config FILE] [flags]`,
    "",
    "flags (each overrides its field of the file):",
    ...lines,
    "",
    `Every field of the file: deploy/schema/${spec.who}.schema.json (example: deploy/examples/${spec.who}.json).`,
    "",
  ].join("\n");
}
