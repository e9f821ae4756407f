#!/usr/bin/env node
/**
 * The `rbdbackup` command: dispatch to the daemons (`agent --config FILE`, `coordinator ...`) and to the
 * client verbs of the public API (backup, job, agent list, cluster, record, catalog, policy, protection, volume). Failures are reported
 * here, once, with the exit codes of exit-codes.ts (listed in usage.ts).
 */
import path from "node:path";
import { splitLeadingGlobalFlags, UsageError, withoutGlobalFlags } from "./args";
import { agentClientCommand } from "./commands/agent";
import { backupCommand } from "./commands/backup";
import { catalogCommand } from "./commands/catalog";
import { clusterCommand } from "./commands/cluster";
import { jobCommand } from "./commands/job";
import { policyCommand } from "./commands/policy";
import { protectionCommand } from "./commands/protection";
import { recordCommand } from "./commands/record";
import { volumeCommand } from "./commands/volume";
import { CliFailure, ExitCode, reportError } from "./exit-codes";
import { usage } from "./usage";

interface CoordinatorModule {
  coordinatorMain(argv: string[]): Promise<number>;
}

/** Loaded only when asked for (and resolved at run time, so the CLI builds without it). */
function loadCoordinator(): CoordinatorModule {
  const file = path.join(__dirname, "../coordinator/main");
  let m: Partial<CoordinatorModule>;
  try {
    m = require(file) as Partial<CoordinatorModule>;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "MODULE_NOT_FOUND" && err.message.includes(file)) {
      throw new CliFailure(ExitCode.JobFailed, `the coordinator is not part of this build (no ${file}.js)`);
    }
    throw e;
  }
  if (typeof m.coordinatorMain !== "function") {
    throw new CliFailure(ExitCode.JobFailed, `${file} has no coordinatorMain`);
  }
  return m as CoordinatorModule;
}

/**
 * `rbdbackup help [COMMAND [VERB]]`: the usage, or the help of a command or of one of its verbs (as
 * `rbdbackup COMMAND [VERB] --help`); `help agent` and `help coordinator` are the daemons' flags.
 */
function help(args: string[]): Promise<number> {
  // Flags say nothing about which help: `rbdbackup --json help` arrives as `help --json`.
  const [about, ...verb] = withoutGlobalFlags(args);
  if (about === undefined || about === "help") {
    process.stdout.write(usage);
    return Promise.resolve(ExitCode.Ok);
  }
  if (about === "coordinator" || (about === "agent" && verb.length === 0)) return run(about, ["--help"]);
  return run(about, ["help", ...verb]);
}

async function run(cmd: string | undefined, rest: string[]): Promise<number> {
  switch (cmd) {
    case "agent": {
      // `agent list` and `agent forget` are client verbs; anything else runs the daemon (loaded only then: it needs librbd).
      if (rest[0] === "list" || rest[0] === "forget" || rest[0] === "help") return agentClientCommand(rest);
      const { agentMain } = await import("../../agents/agent/main");
      return agentMain(rest);
    }
    case "coordinator":
      return loadCoordinator().coordinatorMain(rest);
    case "backup":
      return backupCommand(rest);
    case "job":
      return jobCommand(rest);
    case "cluster":
      return clusterCommand(rest);
    case "record":
      return recordCommand(rest);
    case "catalog":
      return catalogCommand(rest);
    case "policy":
      return policyCommand(rest);
    case "protection":
      return protectionCommand(rest);
    case "volume":
      return volumeCommand(rest);
    case "help":
      return help(rest);
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return ExitCode.Ok;
    case undefined:
      process.stderr.write(usage);
      return ExitCode.Usage;
    default:
      throw new UsageError(`unknown command "${cmd}" (see rbdbackup help)`);
  }
}

export async function main(argv: string[]): Promise<number> {
  // Global flags may come first: `rbdbackup --json backup list` is `rbdbackup backup list --json`.
  const { leading, rest: args } = splitLeadingGlobalFlags(argv);
  const [cmd, ...rest] = args;
  // Before a "--" (after it every word is an operand): `rbdbackup --json job show -- ID`.
  const end = rest.indexOf("--");
  const withGlobals = end < 0 ? [...rest, ...leading] : [...rest.slice(0, end), ...leading, ...rest.slice(end)];
  try {
    return await run(cmd, withGlobals);
  } catch (e) {
    const r = reportError(e);
    process.stderr.write(`${r.message}\n`);
    return r.exitCode;
  }
}

if (require.main === module) {
  // Output piped into a command that stopped reading (`| head`): stop quietly.
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
  main(process.argv.slice(2)).then(
    // Exit once stdout is flushed (a pipe may still hold the output).
    (code) => process.stdout.write("", () => process.exit(code)),
    (e) => {
      process.stderr.write(`rbdbackup: ${(e as Error)?.stack ?? e}\n`);
      process.exit(1);
    },
  );
}
