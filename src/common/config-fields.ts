/**
 * Checked reading of a daemon's configuration (JSON file + flags): every failure names the field, and
 * the rules (integers in a range, required strings, host:port, TLS material unless insecure by name)
 * are the same for the agent and the coordinator.
 */
import { readFileSync } from "node:fs";
import type { TlsConfig } from "./tls";

/** A config file's parsed JSON (fields are checked where used). */
// biome-ignore lint/suspicious/noExplicitAny: parsed JSON; every field used is checked by the callers
export type ConfigFile = Record<string, any>;

export function configFields(who: string) {
  const fail = (msg: string): never => {
    throw new Error(`${who} config: ${msg}`);
  };
  const int = (v: unknown, name: string, min: number, max: number): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      fail(`${name} must be an integer in [${min}, ${max}]`);
    return v as number;
  };
  const str = (v: unknown, name: string, required = true): string => {
    if (v === undefined && !required) return "";
    if (typeof v !== "string" || (required && v === "")) fail(`${name} must be a non-empty string`);
    return v as string;
  };
  return {
    fail,
    int,
    str,
    readFile(file: string | undefined): ConfigFile {
      if (!file) return {};
      try {
        return JSON.parse(readFileSync(file, "utf8"));
      } catch (e) {
        return fail(`cannot read ${file}: ${(e as Error).message}`);
      }
    },
    /** TLS from flags (--tls-ca, --tls-cert, --tls-key, --insecure) over the file's "tls" object. */
    tls(values: Record<string, unknown>, ft: ConfigFile): TlsConfig {
      const pick = (flag: string, key: string) => (values[flag] ?? ft[key]) as string | undefined;
      const t: TlsConfig = { insecure: (values.insecure as boolean | undefined) ?? ft.insecure === true };
      for (const [flag, key] of [
        ["tls-ca", "ca"],
        ["tls-cert", "cert"],
        ["tls-key", "key"],
      ] as const) {
        const v = pick(flag, key);
        if (v) t[key] = str(v, `tls.${key}`);
      }
      if (!t.insecure && (!t.ca || !t.cert || !t.key)) {
        fail("tls.ca, tls.cert and tls.key are required (mutual TLS between parts); tls.insecure: true only for tests");
      }
      return t;
    },
    /** Each non-empty value must be host:port (IPv6 in brackets). */
    hostPorts(pairs: Array<readonly [string, string]>): void {
      for (const [k, v] of pairs) {
        if (v !== "" && !/^[^:]+:\d+$/.test(v) && !/^\[[0-9a-f:]+\]:\d+$/i.test(v))
          fail(`${k} "${v}" must be host:port`);
      }
    },
  };
}
