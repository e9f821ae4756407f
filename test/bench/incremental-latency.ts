/**
 * Where the milliseconds of a small incremental go (issue 16), runnable alone: the scenarios of
 * scenarios/incremental.ts (an incremental of ~2% of 1 GiB in 64 KiB extents through the API, and the
 * same change over a 4 GiB image), scenarios/sparse.ts (full backup of a 4 GiB image with 64 MiB
 * written) and scenarios/live-writes.ts (an incremental under `rbd bench` 4 KiB random writes vs idle),
 * each against the CLI in the same run. Prints each row and the detailed phases (p50 [min–max] ms).
 *
 *   node dist/test/bench/incremental-latency.js [--mib 1024] [--runs 5] [--only incremental,sparse,live-writes]
 *                                              [--limits '{"readsInFlight":8}'] [--incr-sizes 1024,4096]
 *
 * `--incr-sizes 1024`: the incremental scenario on the --mib image only (not the 4 GiB one as well). The
 * daemons are this checkout's, or RBDBACKUP_DAEMONS_DIST's build; incremental-ab.sh alternates two builds,
 * a fresh lab per run (an incremental's copy-on-write clones stay in the memstore OSDs).
 */
import { labDir } from "../helpers/lab";
import { arg, limitsArg } from "./measure";
import { scenario as incremental } from "./scenarios/incremental";
import { scenario as liveWrites } from "./scenarios/live-writes";
import { scenario as sparse } from "./scenarios/sparse";
import type { Row, ScenarioContext } from "./scenarios/types";

const all = [incremental, sparse, liveWrites];
const only = arg("only", "incremental").split(",");

function print(r: Row): void {
  const f = (x: number | null | undefined, d = 3) => (typeof x === "number" ? x.toFixed(d) : "—");
  console.log(`\n${r.scenario}`);
  console.log(
    `  ours ${f(r.oursSeconds)} s · CLI ${f(r.cliSeconds)} s · ratio CLI/ours ${f(r.ratio, 2)}× (>1: faster)`,
  );
  if (r.cpuPerGiB)
    console.log(
      `  CPU-s/GiB ${JSON.stringify(r.cpuPerGiB, (_, v) => (typeof v === "number" ? Number(v.toFixed(2)) : v))}`,
    );
  if (r.note) console.log(`  ${r.note}`);
}

async function main(): Promise<void> {
  const ctx: ScenarioContext = {
    mib: Number(arg("mib", "1024")),
    rounds: Number(arg("runs", "5")),
    limits: limitsArg(),
    labDir,
    log: (l) => process.stderr.write(`${l}\n`),
  };
  const rows: Row[] = [];
  for (const s of all.filter((x) => only.includes(x.name))) {
    ctx.log(`— ${s.name}: ${s.describe}`);
    for (const r of await s.run(ctx)) {
      print(r);
      rows.push(r);
    }
  }
  console.log(`\nJSON ${JSON.stringify({ bench: "incremental-latency", at: new Date().toISOString(), rows })}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
