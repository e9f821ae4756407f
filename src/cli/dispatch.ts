/**
 * Dispatch of `rbdbackup <noun> <verb> ...` to the verb's function, with help and unknown verbs:
 * `<noun> <verb> --help` (or -h) prints that verb's help, `<noun> --help` and `<noun> help` list the
 * noun's verbs, `<noun> help <verb>` is `<noun> <verb> --help`.
 */
import { UsageError } from "./args";
import { type NounHelp, nounHelpText, verbHelpText } from "./help";
import { print } from "./output";

/** A verb: its arguments (after the verb) to an exit code. */
export type Verb = (argv: string[]) => Promise<number>;

/** -h/--help anywhere before "--". */
export function wantsHelp(argv: string[]): boolean {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === "-h" || a === "--help");
}

export async function dispatch(help: NounHelp, verbs: Record<string, Verb>, argv: string[]): Promise<number> {
  const { noun } = help;
  const [verb, ...rest] = argv;
  const names = Object.keys(verbs).join(", ");
  const known = (v: string | undefined): v is string => v !== undefined && Object.hasOwn(verbs, v);
  if (verb === "help" || verb === "-h" || verb === "--help") {
    const [about] = rest;
    if (verb === "help" && about !== undefined && !known(about)) {
      throw new UsageError(`unknown command "${noun} ${about}" (${noun} commands: ${names})`);
    }
    print(verb === "help" && known(about) ? verbHelpText(help, about) : nounHelpText(help));
    return 0;
  }
  if (verb === undefined || verb.startsWith("-")) {
    throw new UsageError(`"${noun}" needs a command: ${names} (see rbdbackup ${noun} --help)`);
  }
  if (!known(verb)) {
    throw new UsageError(
      `unknown command "${noun} ${verb}" (${noun} commands: ${names}; see rbdbackup ${noun} --help)`,
    );
  }
  if (wantsHelp(rest)) {
    print(verbHelpText(help, verb));
    return 0;
  }
  return (verbs[verb] as Verb)(rest);
}
