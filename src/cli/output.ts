/**
 * What the CLI writes on stdout: human text as rendered by format.ts, or JSON documents (--json).
 * Nothing else goes to stdout, so --json output can be piped as is.
 */

export function print(text: string): void {
  process.stdout.write(text.endsWith("\n") || text === "" ? text : `${text}\n`);
}

/** One JSON document (the generated X.toJSON of a message, or an object of them), indented. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A remark for a person (e.g. "more results: use --all"): stderr, never stdout. */
export function note(text: string): void {
  process.stderr.write(`${text}\n`);
}
