/**
 * Help of the client verbs: each command file declares its verbs' help (synopsis, what it does,
 * arguments, flags, an example) next to their code; this file renders it three ways — one verb
 * (`rbdbackup backup create --help`), one noun's verbs (`rbdbackup backup --help`), and the lines of
 * the overview (`rbdbackup help`, usage.ts).
 */

/** Help of one verb, e.g. `backup create`. */
export interface VerbHelp {
  /** What follows "rbdbackup <noun> <verb>" on the usage line: arguments and flags. */
  synopsis: string;
  /** What it does, one sentence (shown in the overview too). */
  summary: string;
  /** More detail, shown only in the verb's own help. */
  details?: string;
  args?: Array<[name: string, meaning: string]>;
  /** The verb's own flags (the global ones are named once at the end). */
  flags?: Array<[flag: string, meaning: string]>;
  /** Command lines, without the leading "rbdbackup ". */
  examples: string[];
}

/** The verbs of one noun, e.g. `backup`. */
export interface NounHelp {
  noun: string;
  /** The overview's heading of this noun's verbs. */
  summary: string;
  verbs: Record<string, VerbHelp>;
}

const GLOBAL_FLAGS =
  "global flags: --coordinator HOST:PORT[,HOST:PORT...], --ca FILE, --cert FILE, --key FILE, --token-file FILE, --insecure,\n" +
  "  --timeout SECONDS, --json, -h/--help (see rbdbackup help)";

/** Words of a synopsis or sentence: split at spaces, but never inside [...] (an optional group stays whole). */
function words(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let word = "";
  for (const ch of text) {
    if (ch === "[") depth++;
    if (ch === "]") depth = Math.max(0, depth - 1);
    if (ch === " " && depth === 0) {
      if (word) out.push(word);
      word = "";
    } else word += ch;
  }
  if (word) out.push(word);
  return out;
}

/** `prefix` then `body`, broken into lines of at most `width` (when words allow), indented by `indent`. */
export function wrap(prefix: string, body: string, width: number, indent: number): string {
  const lines: string[] = [];
  let line = body.trim() === "" ? prefix.trimEnd() : prefix;
  let first = true;
  for (const w of words(body)) {
    if (!first && line.length + 1 + w.length > width) {
      lines.push(line);
      line = " ".repeat(indent) + w;
    } else line = first ? line + w : `${line} ${w}`;
    first = false;
  }
  lines.push(line);
  return lines.join("\n");
}

const WIDTH = 110;

function table(rows: Array<[string, string]>): string[] {
  const w = Math.min(Math.max(...rows.map(([a]) => a.length)) + 2, 36);
  return rows.map(([a, b]) =>
    a.length + 2 > w
      ? `  ${a}\n${wrap(" ".repeat(w + 2), b, WIDTH, w + 2)}`
      : wrap(`  ${a.padEnd(w)}`, b, WIDTH, w + 2),
  );
}

/** `rbdbackup <noun> <verb> --help`. */
export function verbHelpText(help: NounHelp, verb: string): string {
  const v = help.verbs[verb];
  if (!v) return nounHelpText(help);
  const head = `rbdbackup ${help.noun} ${verb}`;
  const out = [wrap(`usage: ${head} `, v.synopsis, WIDTH, head.length + 8), "", v.summary];
  if (v.details) out.push("", v.details);
  if (v.args?.length) out.push("", "arguments:", ...table(v.args));
  if (v.flags?.length) out.push("", "flags:", ...table(v.flags));
  out.push("", GLOBAL_FLAGS, "", v.examples.length > 1 ? "examples:" : "example:");
  out.push(...v.examples.map((e) => `  rbdbackup ${e}`), "");
  return out.join("\n");
}

/** `rbdbackup <noun> --help`: its verbs, one line each. */
export function nounHelpText(help: NounHelp): string {
  const rows = Object.entries(help.verbs).map(([verb, v]): [string, string] => [verb, v.summary]);
  return [
    `usage: rbdbackup ${help.noun} <command> [arguments] [flags]`,
    "",
    `${help.summary}:`,
    ...table(rows),
    "",
    `rbdbackup ${help.noun} <command> --help: that command's arguments, flags and an example.`,
    "",
  ].join("\n");
}

/** The overview's lines for one noun: each verb's usage line, then what it does. */
export function overviewLines(help: NounHelp): string {
  const lines = [`${help.summary}:`];
  for (const [verb, v] of Object.entries(help.verbs)) {
    const head = `${help.noun} ${verb}`;
    lines.push(wrap(`  ${head} `, v.synopsis, WIDTH, head.length + 3), `      ${v.summary}`);
  }
  return lines.join("\n");
}
