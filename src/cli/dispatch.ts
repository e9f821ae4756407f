/** Dispatch of `rbdbackup <noun> <verb> ...` to the verb's function, with help and unknown verbs. */
import { UsageError } from "./args";
import { print } from "./output";
import { usage } from "./usage";

/** A verb: its arguments (after the verb) to an exit code. */
export type Verb = (argv: string[]) => Promise<number>;

/** -h/--help anywhere before "--". */
export function wantsHelp(argv: string[]): boolean {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === "-h" || a === "--help");
}

export async function dispatch(noun: string, verbs: Record<string, Verb>, argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const names = Object.keys(verbs).join(", ");
  if (verb === "help" || verb === "-h" || verb === "--help" || wantsHelp(rest)) {
    print(usage);
    return 0;
  }
  if (verb === undefined || verb.startsWith("-")) {
    throw new UsageError(`"${noun}" needs a command: ${names} (see rbdbackup help)`);
  }
  const fn = Object.hasOwn(verbs, verb) ? verbs[verb] : undefined;
  if (!fn) throw new UsageError(`unknown command "${noun} ${verb}" (${noun} commands: ${names}; see rbdbackup help)`);
  return fn(rest);
}
