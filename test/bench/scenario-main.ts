/**
 * Runs one scenario module alone (its `require.main === module` entry): the context from the command
 * line (--mib, --rounds, --limits; the lab from RBDBACKUP_LAB_DIR), its rows printed as a table and as
 * one `JSON {...}` line. The suite (test/bench/suite.ts) is the usual way to run several.
 */
import { labDir } from "../helpers/lab";
import { interrupting } from "./interrupt";
import { arg, limitsArg } from "./measure";
import type { Row, Scenario } from "./scenarios/types";

export function printRows(rows: Row[]): void {
  const pad = (v: unknown, n: number) => String(v ?? "–").padStart(n);
  const cpu = (r: Row) =>
    [r.cpuPerGiB?.sourceAgent, r.cpuPerGiB?.destinationAgent, r.cpuPerGiB?.cliExport, r.cpuPerGiB?.cliImport]
      .map((x) => (x === undefined ? "–" : x.toFixed(2)))
      .join(" ");
  console.log(
    `\n${"scenario".padEnd(44)}${pad("CLI s", 8)}${pad("ours s", 8)}${pad("ratio", 7)}${pad("MiB/s", 8)}${pad("wire MiB", 10)}${pad("RSS MiB", 9)}${pad("bound", 8)}  CPU s/GiB src dst cliExp cliImp`,
  );
  for (const r of rows) {
    console.log(
      `${r.scenario.padEnd(44)}${pad(r.cliSeconds, 8)}${pad(r.oursSeconds, 8)}${pad(r.ratio === null ? null : `${r.ratio}x`, 7)}${pad(r.oursMiBps, 8)}${pad(r.wireMiB, 10)}${pad(r.agentPeakRssMiB, 9)}${pad(r.bound, 8)}  ${cpu(r)}`,
    );
    if (r.note) console.log(`  ${r.note}`);
  }
}

export function runAlone(scenario: Scenario): void {
  const ctx = {
    mib: Number(arg("mib", "256")),
    rounds: Number(arg("rounds", "1")),
    limits: limitsArg(),
    labDir,
    log: (line: string) => process.stderr.write(`${line}\n`),
  };
  scenario.run(ctx).then(
    (rows) => {
      printRows(rows);
      console.log(
        `\nJSON ${JSON.stringify({ scenario: scenario.name, at: new Date().toISOString(), mib: ctx.mib, rounds: ctx.rounds, rows })}`,
      );
    },
    (e) => {
      if (interrupting()) return; // the interrupt's cleanup exits when done
      console.error(e);
      process.exit(1);
    },
  );
}
