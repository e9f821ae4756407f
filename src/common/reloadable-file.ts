/**
 * A file a daemon reads at start and again on reload (SIGHUP): the coordinator's API tokens and its
 * revoked certificates. `parse` turns the text into the value, throwing with the file and line of a bad
 * line; a file that cannot be read throws naming it. A reload that throws keeps the value in force.
 * `file` "" = no file: the value is `empty`, and reload changes nothing.
 */
import { readFileSync } from "node:fs";
import type { Logger } from "./log";

export class ReloadableFile<T> {
  #value: T;

  constructor(
    readonly file: string,
    /** What the file holds, for messages: "API token file", "revoked certificates file". */
    readonly what: string,
    readonly parse: (text: string, file: string) => T,
    empty: T,
  ) {
    this.#value = file ? this.#read() : empty;
  }

  get value(): T {
    return this.#value;
  }

  /** Reads the file again. Throws (and keeps the value in force) when the new file is bad. */
  reload(): T {
    if (this.file) this.#value = this.#read();
    return this.#value;
  }

  #read(): T {
    let text: string;
    try {
      text = readFileSync(this.file, "utf8");
    } catch (e) {
      throw new Error(`cannot read the ${this.what} ${this.file}: ${(e as Error).message}`);
    }
    return this.parse(text, this.file);
  }
}

/**
 * A reload (SIGHUP), logged: "<what> reloaded" with the file and how many entries it now holds, or —
 * the new file bad, the old value in force — "<what> NOT reloaded: the file is bad; <kept>" as an
 * error. Returns whether it took; false at once without a file.
 */
export function reloadLogged(
  f: { file: string; reload(): number },
  log: Logger,
  m: { what: string; count: string; kept: string },
): boolean {
  if (!f.file) return false;
  try {
    const n = f.reload();
    log.info(`${m.what} reloaded`, { file: f.file, [m.count]: n });
    return true;
  } catch (err) {
    log.error(`${m.what} NOT reloaded: the file is bad; ${m.kept}`, { file: f.file, err });
    return false;
  }
}
