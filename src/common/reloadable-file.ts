/**
 * A file a daemon reads at start and again on reload (SIGHUP): the coordinator's API tokens and scopes,
 * and the revoked certificates. `parse` turns the text into the value, throwing with the file and line of
 * a bad line; a file that cannot be read throws naming it. A reload that throws keeps the value in force.
 * `file` "" = no file: the value is `empty`, and reload changes nothing.
 *
 * A file rewritten in place (an editor, `>`) can be read half-written by a reload: a scopes line cut short
 * names a wider scope, a revocation list cut short lifts revocations. So a reload refuses a file that does
 * not end with a newline, and — for a deny list (`refuseEmpty`) — an empty one while entries are in force;
 * replacing a file whole (write a new one, then mv it over the old) is never read half-written.
 */
import { readFileSync } from "node:fs";
import type { Logger } from "./log";
import type { ReloadedFile, ReloadMetrics } from "./reload-metrics";

export interface ReloadOptions<T> {
  /** Whether an empty file may not replace `current` on reload (a deny list: empty lifts every entry). */
  refuseEmpty?: (current: T) => boolean;
}

export class ReloadableFile<T> {
  #value: T;

  constructor(
    readonly file: string,
    /** What the file holds, for messages: "API token file", "revoked certificates file". */
    readonly what: string,
    readonly parse: (text: string, file: string) => T,
    empty: T,
    readonly opts: ReloadOptions<T> = {},
  ) {
    this.#value = file ? this.parse(this.#text(), file) : empty;
  }

  get value(): T {
    return this.#value;
  }

  /** Reads the file again. Throws (and keeps the value in force) when the new file is bad. */
  reload(): T {
    if (!this.file) return this.#value;
    const text = this.#text();
    if (text !== "" && !text.endsWith("\n")) {
      throw new Error(
        `the ${this.what} ${this.file} does not end with a newline: it may be half-written (replace a file whole: write the new one beside it, then mv it over)`,
      );
    }
    if (text.trim() === "" && this.opts.refuseEmpty?.(this.#value)) {
      throw new Error(
        `the ${this.what} ${this.file} is empty: a file being rewritten in place reads empty for a moment (to list nothing, leave a comment line in it)`,
      );
    }
    this.#value = this.parse(text, this.file);
    return this.#value;
  }

  #text(): string {
    try {
      return readFileSync(this.file, "utf8");
    } catch (e) {
      throw new Error(`cannot read the ${this.what} ${this.file}: ${(e as Error).message}`);
    }
  }
}

/**
 * A reload (SIGHUP), logged: "<what> reloaded" with the file and how many entries it now holds, or —
 * the new file bad, the old value in force — "<what> NOT reloaded: the file is bad; <kept>" as an
 * error; counted in `metrics` under `m.file`. Entries the reload removed (`f.removed`, when the file's
 * owner tells them: lifted revocations) are a warning naming them. Returns whether it took; false at once
 * without a file.
 */
export function reloadLogged(
  f: { file: string; reload(): number; removed?: () => string[] },
  log: Logger,
  m: { what: string; count: string; kept: string; file: ReloadedFile },
  metrics?: ReloadMetrics | null,
): boolean {
  if (!f.file) return false;
  try {
    const n = f.reload();
    log.info(`${m.what} reloaded`, { file: f.file, [m.count]: n });
    const removed = f.removed?.() ?? [];
    if (removed.length) log.warn(`${m.what}: the reload removed ${removed.length}`, { file: f.file, removed });
    metrics?.record(m.file, true);
    return true;
  } catch (err) {
    log.error(`${m.what} NOT reloaded: the file is bad; ${m.kept}`, { file: f.file, err });
    metrics?.record(m.file, false);
    return false;
  }
}
