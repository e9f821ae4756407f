/**
 * Scheduler tick bench: CPU per tick while a long queue waits on the per-cluster limit (the ticks that
 * change nothing: they poll at cfg.tickMs). In one process, with the unit tests' harness (in-memory
 * SQLite catalog, fake agents, fake clock) of the build under test: --queued backups of cluster a (4
 * run, the rest wait), --ticks ticks 1 s apart on the fake clock (a lease expires every 15 ticks and
 * its job is retried: those ticks change something). Prints CPU ms per tick and catalog.activeJobs()
 * reads per tick. Figures only — no assertions.
 *
 *   node dist/test/bench/scheduler-tick.js [--dist DIR/dist] [--queued 1000] [--ticks 200]
 *
 * A/B: run it alternately with --dist of each build (A, B, A, B, …) so that both see the same machine.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import type { Harness as HarnessT, vol as volT } from "../unit/coordinator/harness";

const { values } = parseArgs({
  options: {
    dist: { type: "string", default: path.resolve(__dirname, "../..") },
    queued: { type: "string", default: "1000" },
    ticks: { type: "string", default: "200" },
  },
});
process.env.RBDBACKUP_NATIVE_PATH ??= "/nonexistent/x.node";
const harness = path.join(path.resolve(values.dist), "test/unit/coordinator/harness.js");
const { Harness, vol } = require(harness) as { Harness: typeof HarnessT; vol: typeof volT };

const queued = Number(values.queued);
const ticks = Number(values.ticks);
const h = new Harness({ tickMs: 1000, perClusterLimit: 4 });
h.connect("a1", "a", 1000);
h.connect("b1", "b", 1000);
for (let i = 0; i < queued; i++) h.queueBackup(vol(`v${i}`));
h.tick(); // 4 leased, the others' waiting reason set
h.tick();
let reads = 0;
const read = h.catalog.activeJobs.bind(h.catalog);
h.catalog.activeJobs = () => {
  reads++;
  return read();
};
const before = process.cpuUsage();
for (let i = 0; i < ticks; i++) {
  h.advance(1000);
  h.tick();
}
const cpu = process.cpuUsage(before);
const cpuMsPerTick = (cpu.user + cpu.system) / 1000 / ticks;
process.stdout.write(
  `${JSON.stringify({ dist: values.dist, queued, ticks, cpuMsPerTick: +cpuMsPerTick.toFixed(3), readsPerTick: reads / ticks })}\n`,
);
h.close();
