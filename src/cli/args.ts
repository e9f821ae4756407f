/**
 * Argument parsing shared by the client verbs: the global connection flags (with their environment
 * fallbacks), volume and location specs, and checked conversions of flag values. Everything here is
 * local validation: a bad value throws UsageError (exit code 2) with a message naming the flag.
 */
import { randomUUID } from "node:crypto";
import { type ParseArgsConfig, parseArgs } from "node:util";
import type { TlsConfig } from "../common/tls";
import type { BackupLocation, VolumeRef } from "../gen/rbdbackup/v1/common";

/** Bad flags or arguments: reported with exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Flags every client verb accepts. */
export const globalOptions = {
  coordinator: { type: "string" },
  ca: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "token-file": { type: "string" },
  insecure: { type: "boolean" },
  timeout: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies Options;

export const DEFAULT_COORDINATOR = "127.0.0.1:7300";
export const DEFAULT_TIMEOUT_SECONDS = 30;

/** Parses a verb's arguments: its own flags plus the global ones, anywhere on the line. */
export function parseFlags<O extends Options>(argv: string[], options: O) {
  try {
    return parseArgs({
      args: argv,
      options: { ...globalOptions, ...options } as typeof globalOptions & O,
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * Global flags given before the command (`rbdbackup --json backup list`): split off so they can be
 * handed to the verb with its own flags. Stops at the first argument that is not a global flag.
 */
export function splitLeadingGlobalFlags(argv: string[]): { leading: string[]; rest: string[] } {
  let i = 0;
  while (i < argv.length) {
    const a = argv[i] ?? "";
    if (!a.startsWith("--") || a === "--" || a === "--help") break;
    const name = a.slice(2).split("=")[0] ?? "";
    if (!Object.hasOwn(globalOptions, name)) break;
    const takesValue = globalOptions[name as keyof typeof globalOptions].type === "string";
    i += takesValue && !a.includes("=") ? 2 : 1;
  }
  return { leading: argv.slice(0, Math.min(i, argv.length)), rest: argv.slice(Math.min(i, argv.length)) };
}

/** The words of argv without its global flags (and their values): what `help` is asked about. */
export function withoutGlobalFlags(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const name = a.startsWith("--") ? (a.slice(2).split("=")[0] ?? "") : "";
    if (name && Object.hasOwn(globalOptions, name)) {
      if (globalOptions[name as keyof typeof globalOptions].type === "string" && !a.includes("=")) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

/** The positional arguments of a verb, by name; a missing or extra one is a usage error. */
export function positionals(verb: string, got: string[], names: string[]): string[] {
  if (got.length < names.length) {
    const missing = names.slice(got.length).join(" ");
    throw new UsageError(`${verb}: missing ${missing} (usage: rbdbackup ${verb} ${names.join(" ")})`);
  }
  if (got.length > names.length) {
    throw new UsageError(`${verb}: unexpected argument "${got[names.length]}"`);
  }
  for (const [i, v] of got.entries()) {
    if (v.trim() === "") throw new UsageError(`${verb}: ${names[i]} must not be empty`);
  }
  return got;
}

function specParts(spec: string, what: string, form: string, min: number, max: number): string[] {
  const parts = spec.split("/");
  if (parts.length < min || parts.length > max) {
    const counts = min + 1 === max ? `${min} or ${max}` : `${min} to ${max}`;
    throw new UsageError(`${what} "${spec}" must be ${form} (${counts} parts separated by "/"; got ${parts.length})`);
  }
  const empty = parts.indexOf("");
  if (empty >= 0) throw new UsageError(`${what} "${spec}" must be ${form} (part ${empty + 1} is empty)`);
  return parts;
}

/** "CLUSTER/POOL/IMAGE" or "CLUSTER/POOL/NAMESPACE/IMAGE". */
export function parseVolumeSpec(spec: string, what = "volume"): VolumeRef {
  const form = "CLUSTER/POOL[/NAMESPACE]/IMAGE";
  const p = specParts(spec, what, form, 3, 4);
  if (p.length === 3) return { cluster: p[0] ?? "", pool: p[1] ?? "", namespace: "", image: p[2] ?? "" };
  return { cluster: p[0] ?? "", pool: p[1] ?? "", namespace: p[2] ?? "", image: p[3] ?? "" };
}

/** "CLUSTER", "CLUSTER/POOL" or "CLUSTER/POOL/NAMESPACE" (no pool: the cluster's default backup pool). */
export function parseLocationSpec(spec: string, what = "location"): BackupLocation {
  const p = specParts(spec, what, "CLUSTER[/POOL[/NAMESPACE]]", 1, 3);
  return { cluster: p[0] ?? "", pool: p[1] ?? "", namespace: p[2] ?? "" };
}

/** An integer flag value in [min, max]; undefined when the flag is absent. */
export function parseIntFlag(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${flag} must be an integer from ${min} to ${max}, got "${value}"`);
  }
  return Number(value);
}

/** A flag whose value is one of `choices` (case-insensitive); undefined when the flag is absent. */
export function parseChoice<T>(value: string | undefined, flag: string, choices: Record<string, T>): T | undefined {
  if (value === undefined) return undefined;
  const key = value.toLowerCase();
  if (!Object.hasOwn(choices, key)) {
    throw new UsageError(`--${flag} must be one of ${Object.keys(choices).join(", ")}, got "${value}"`);
  }
  return choices[key];
}

/** Repeated `--meta key=value` flags as a map; a key given twice is a usage error. */
export function parseMeta(values: string[] | undefined): Record<string, string> {
  const meta: Record<string, string> = {};
  for (const kv of values ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--meta must be KEY=VALUE with a non-empty key, got "${kv}"`);
    const k = kv.slice(0, eq);
    if (Object.hasOwn(meta, k)) throw new UsageError(`--meta: key "${k}" given twice`);
    meta[k] = kv.slice(eq + 1);
  }
  return meta;
}

/** A flag the verb cannot do without. */
export function requiredFlag(value: string | undefined, flag: string, verb: string): string {
  if (value === undefined || value.trim() === "") throw new UsageError(`${verb} needs --${flag}`);
  return value;
}

/** The key this invocation made up for its mutating call (none given): named when the call's answer was lost. */
let madeUpKey = "";

/** The key idempotencyKey() made up in this process, "" when none. */
export function madeUpIdempotencyKey(): string {
  return madeUpKey;
}

/**
 * An idempotency key as the API accepts it (≤ 128 characters of [A-Za-z0-9._:-]). None given: one is
 * made up (`cli-<uuid>`), so a call whose answer is lost (a deadline, an unreachable leader) can be
 * asked again with it (the error names it) and gets its job instead of queuing a second one.
 */
export function idempotencyKey(value: string | undefined): string {
  if (value === undefined) {
    madeUpKey = `cli-${randomUUID()}`;
    return madeUpKey;
  }
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(value)) {
    throw new UsageError(`--idempotency-key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got "${value}"`);
  }
  return value;
}

/** A "host:port" or "[v6]:port" address with a port from 1 to 65535. */
export function checkAddress(address: string, flag: string): string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s/]+)):(\d+)$/.exec(address);
  const port = Number(m?.[3]);
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new UsageError(`--${flag} must be HOST:PORT (or [IPv6]:PORT), got "${address}"`);
  }
  return address;
}

/** Where and how to reach the coordinator, from the global flags and the environment. */
export interface ConnectionSettings {
  /** The (first) coordinator address. */
  address: string;
  /** Every coordinator address, in order, when several were given (a leader and its standbys). */
  addresses?: string[];
  tls: TlsConfig;
  /** File holding the bearer token (--token-file), or the token itself (RBDBACKUP_TOKEN). */
  tokenFile?: string;
  token?: string;
  /** Deadline of each unary call. */
  timeoutMs: number;
}

type Env = Record<string, string | undefined>;

/** Flags win over the environment: RBDBACKUP_COORDINATOR, RBDBACKUP_TLS_CA/CERT/KEY, RBDBACKUP_TOKEN. */
export function connectionSettings(
  values: {
    coordinator?: string | undefined;
    ca?: string | undefined;
    cert?: string | undefined;
    key?: string | undefined;
    "token-file"?: string | undefined;
    insecure?: boolean | undefined;
    timeout?: string | undefined;
  },
  env: Env,
): ConnectionSettings {
  const flag = values.coordinator !== undefined ? "coordinator" : "coordinator (RBDBACKUP_COORDINATOR)";
  const list = (values.coordinator ?? (env.RBDBACKUP_COORDINATOR || DEFAULT_COORDINATOR)).split(",");
  const addresses = [...new Set(list.map((a) => checkAddress(a.trim(), flag)))];
  const address = addresses[0] as string;
  const insecure = values.insecure === true;
  const ca = values.ca ?? (env.RBDBACKUP_TLS_CA || undefined);
  const cert = values.cert ?? (env.RBDBACKUP_TLS_CERT || undefined);
  const key = values.key ?? (env.RBDBACKUP_TLS_KEY || undefined);
  if (!insecure && (cert === undefined) !== (key === undefined)) {
    throw new UsageError("--cert and --key go together (a client certificate and its key)");
  }
  if (!insecure && cert !== undefined && ca === undefined) {
    throw new UsageError("--cert and --key need --ca (the CA that signs the coordinator's certificate)");
  }
  let timeoutMs = DEFAULT_TIMEOUT_SECONDS * 1000;
  if (values.timeout !== undefined) {
    const s = Number(values.timeout);
    if (values.timeout.trim() === "" || !Number.isFinite(s) || s < 0.1 || s > 86_400) {
      throw new UsageError(`--timeout must be a number of seconds from 0.1 to 86400, got "${values.timeout}"`);
    }
    timeoutMs = Math.round(s * 1000);
  }
  const tls: TlsConfig = insecure
    ? { insecure: true }
    : { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
  const settings: ConnectionSettings = { address, tls, timeoutMs };
  if (addresses.length > 1) settings.addresses = addresses;
  if (values["token-file"] !== undefined) settings.tokenFile = values["token-file"];
  else if (env.RBDBACKUP_TOKEN) settings.token = env.RBDBACKUP_TOKEN;
  return settings;
}
