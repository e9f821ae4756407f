/**
 * The performance suite (`npm run bench`, issue 16): runs scenarios (test/bench/scenarios/, one module each,
 * contract in scenarios/types.ts; the list in scenarios/index.ts) one after another on the lab clusters,
 * prints their rows side by side, and writes them as JSON. Each scenario measures rbdbackup (through the
 * coordinator's API, agents on mutual TLS) and the Ceph CLI doing the same work in the same run,
 * alternating, medians of the rounds; every row has the CPU-seconds per GiB of the source agent, the
 * destination agent, `rbd export-diff` and `rbd import-diff` separately, the agents' peak RSS, and what
 * bound the run (compare.ts). A scenario that fails is reported and the others still run (exit code 1).
 *
 *   node dist/test/bench/suite.js [--scenarios full,restore,…] [--mib 1024] [--rounds 3]
 *       [--limits '{"chunkSizeBytes":2097152}'] [--json-out FILE] [--note TEXT] [--readme README.md]
 *   node dist/test/bench/suite.js --from-json dist/bench-results.json --readme README.md [--note TEXT]
 *
 * Before each scenario the lab's OSDs trim the snapshots removed so far (lab-trim.ts: the bench lab holds
 * trimming off, and memstore keeps removed snapshots' data in RAM until trimmed), and a scenario whose
 * writes (Scenario.writes) a cluster has no room for is not run, with the reason (lab-room.ts; exit code 1).
 *
 * Default scenarios: every one that does not need root, plus the root ones when run as root.
 * `--readme FILE` rewrites FILE's table between the bench markers (readme-table.ts) — `npm run bench:readme`;
 * with `--from-json` nothing runs: the table is re-rendered from an earlier run's JSON.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import { labDir } from "../helpers/lab";
import { roomVerdict, siteRoom } from "./lab-room";
import { trimRemovedSnapshots } from "./lab-trim";
import { arg, limitsArg } from "./measure";
import { renderBlock, renderTable, replaceBetweenMarkers, type SuiteReport } from "./readme-table";
import { scenarioByName, scenarios } from "./scenarios";
import type { Scenario } from "./scenarios/types";

const log = (line: string) => process.stderr.write(`${line}\n`);

function gitCommit(): string {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return "unknown";
  }
}

/** The scenarios asked for (`--scenarios a,b`), or the default set; unknown names are an error. */
function chosen(isRoot: boolean): { run: Scenario[]; skipped: SuiteReport["skipped"] } {
  const asked = arg("scenarios", "");
  if (!asked) {
    return {
      run: scenarios.filter((s) => isRoot || !s.needsRoot),
      skipped: scenarios.filter((s) => !isRoot && s.needsRoot).map((s) => ({ scenario: s.name, reason: "needs root" })),
    };
  }
  const names = asked.split(",").map((n) => n.trim());
  const unknown = names.filter((n) => !scenarioByName(n));
  if (unknown.length)
    throw new Error(`unknown scenario(s) ${unknown.join(", ")}; known: ${scenarios.map((s) => s.name).join(", ")}`);
  const picked = names.map((n) => scenarioByName(n) as Scenario);
  return {
    run: picked.filter((s) => isRoot || !s.needsRoot),
    skipped: picked.filter((s) => !isRoot && s.needsRoot).map((s) => ({ scenario: s.name, reason: "needs root" })),
  };
}

async function runSuite(): Promise<{ report: SuiteReport; failed: number }> {
  const mib = Number(arg("mib", "1024"));
  const rounds = Number(arg("rounds", "3"));
  if (!(mib > 0) || !(rounds > 0)) throw new Error("--mib and --rounds must be positive numbers");
  const limits = limitsArg();
  const { run, skipped } = chosen(process.getuid?.() === 0);
  const results: SuiteReport["results"] = [];
  let failed = 0;
  const sites = ["site-a", "site-b"].filter((c) => existsSync(path.join(labDir, c, "ceph.conf")));
  const ctx = { mib, rounds, limits, labDir, log };
  for (const s of run) {
    // What the previous scenarios removed leaves the OSDs' RAM first (lab-trim.ts).
    await trimRemovedSnapshots(labDir, sites, log);
    // A cluster without room for what the scenario writes would make the CLI wait out its deadline.
    const noRoom = s.writes ? roomVerdict(s.writes(ctx), await siteRoom(labDir, sites)) : null;
    if (noRoom) {
      failed++;
      log(`scenario ${s.name} not run: ${noRoom}`);
      skipped.push({ scenario: s.name, reason: noRoom });
      continue;
    }
    log(`scenario ${s.name}: ${s.describe}`);
    try {
      results.push({ scenario: s.name, rows: await s.run(ctx) });
    } catch (e) {
      failed++;
      log(`scenario ${s.name} failed: ${(e as Error).stack ?? e}`);
      const first = ((e as Error).message ?? String(e)).trim().split("\n")[0];
      skipped.push({ scenario: s.name, reason: `failed: ${first}` });
    }
  }
  const report: SuiteReport = {
    bench: "suite",
    at: new Date().toISOString(),
    commit: gitCommit(),
    cores: cpus().length,
    mib,
    rounds,
    limits,
    ...(arg("note", "") ? { note: arg("note", "") } : {}),
    results,
    skipped,
  };
  return { report, failed };
}

async function main(): Promise<void> {
  const fromJson = arg("from-json", "");
  const jsonOut = arg("json-out", "");
  const readme = arg("readme", "");
  let failed = 0;
  let report: SuiteReport;
  if (fromJson) {
    report = JSON.parse(readFileSync(fromJson, "utf8")) as SuiteReport;
    if (report.bench !== "suite" || !Array.isArray(report.results))
      throw new Error(`${fromJson} is not the suite's JSON (bench: "suite", results[])`);
    if (arg("note", "")) report.note = arg("note", "");
  } else {
    ({ report, failed } = await runSuite());
    console.log(`\n${renderTable(report.results.flatMap((x) => x.rows))}\n`);
    for (const s of report.skipped) console.log(`not run: ${s.scenario} (${s.reason})`);
    console.log(`\nJSON ${JSON.stringify(report)}`);
    if (jsonOut) {
      mkdirSync(path.dirname(jsonOut), { recursive: true });
      writeFileSync(jsonOut, `${JSON.stringify(report, null, 2)}\n`);
    }
  }
  if (readme) {
    writeFileSync(readme, replaceBetweenMarkers(readFileSync(readme, "utf8"), renderBlock(report)));
    log(`${readme}: table rewritten (${report.results.flatMap((x) => x.rows).length} rows)`);
  }
  if (failed) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
