/**
 * A job's bandwidth cap (TransferOptions.bandwidth_limit_bytes_per_second) with real Ceph, through the
 * coordinator: a backup of a volume with 48 MiB written, capped at 8 MiB/s, takes at least what the cap
 * implies once the bucket's burst is spent ((data − burst) / rate; never an upper bound: the lab is
 * shared), the source agent's metrics show the time its job bucket held the stream back, and a capped
 * restore of it is byte-identical (sha256 of `rbd export`).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { CHUNK_OVERHEAD_BYTES, defaultBurst } from "../../../agents/transfer/shaping/rate-limit";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { backupRequest, type Deployment, deploy, removeBackups, scrape, succeeded } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const RATE = 8 * MiB;
const WRITTEN = 48 * MiB;
/** The agents' default chunk (limits.chunkSizeBytes): the burst is at least one chunk. */
const CHUNK = 2 * MiB;
const BURST = defaultBurst(RATE, CHUNK + CHUNK_OVERHEAD_BYTES);

/** The sum of a counter's samples with this label set in a Prometheus text scrape. */
function counter(text: string, name: string, label: string): number {
  const re = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} ([0-9.e+-]+)$`, "gm");
  return [...text.matchAll(re)].reduce((s, m) => s + Number(m[1]), 0);
}

describe("coordinator: a job's bandwidth cap", () => {
  let d: Deployment;
  const vols = new Volumes();

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    // The backups this file made leave the lab with it (their base images, snapshots, metadata).
    if (d) await removeBackups(d.client).catch((e) => console.log(`# cleanup: ${(e as Error).message}`));
    await d?.stop();
    await vols.cleanup();
  });

  it("a backup capped at 8 MiB/s of 48 MiB takes at least (48 MiB − burst) / 8 MiB/s; its capped restore is byte-identical", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 64, 0, "bwcap");
    const img = await (await vols.io("site-a", "rbd")).imageOpen(v.image);
    try {
      for (let off = 0; off < WRITTEN; off += MiB) await img.write(randomBytes(MiB), off);
      await img.flush();
    } finally {
      await img.close();
    }
    const transfer = { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: RATE };
    const agentA = d.agents[0]?.metricsAddress as string;
    const waitedBefore = counter(await scrape(agentA), "rbdbackup_agent_bandwidth_wait_seconds_total", 'limiter="job"');

    const t0 = performance.now();
    const j = await succeeded(c, (await c.createBackup(backupRequest({ cluster: "site-a", ...v }, { transfer }))).id);
    const backupWall = (performance.now() - t0) / 1000;
    const b = j.backup;
    assert.ok(b);
    assert.ok(b.dataBytesSent >= WRITTEN, `sent ${b.dataBytesSent}`);
    const floor = (b.dataBytesSent - BURST) / RATE;
    assert.ok(
      b.transferSeconds >= floor,
      `the source's transfer took ${b.transferSeconds} s, below the cap's ${floor.toFixed(2)} s`,
    );
    const waited =
      counter(await scrape(agentA), "rbdbackup_agent_bandwidth_wait_seconds_total", 'limiter="job"') - waitedBefore;
    // How long the bucket held the stream back depends on how fast the source reads; it did, and it counted.
    assert.ok(waited > 0, `rbdbackup_agent_bandwidth_wait_seconds_total{limiter="job"} grew by ${waited}`);

    const target = { cluster: "site-a", pool: "rbd", namespace: "", image: uniqueName("bwcap-restored") };
    vols.track("site-a", "rbd", target.image);
    const t1 = performance.now();
    const rj = await c.restoreBackup({
      backupId: b.id,
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
      idempotencyKey: "",
      flatten: false,
      allowCorrupt: false,
      transfer,
    });
    await succeeded(c, rj.id);
    const restoreWall = (performance.now() - t1) / 1000;
    assert.ok(restoreWall >= floor, `the capped restore took ${restoreWall} s, below the cap's ${floor.toFixed(2)} s`);
    assert.equal(await sha("site-a", spec(target)), await sha("site-a", spec(v, b.snapshot)));
    console.log(
      `bandwidth cap ${RATE / MiB} MiB/s, ${(b.dataBytesSent / MiB).toFixed(1)} MiB: floor ${floor.toFixed(2)} s; ` +
        `backup transfer ${b.transferSeconds.toFixed(2)} s (wall ${backupWall.toFixed(2)} s), waited ${waited.toFixed(2)} s; ` +
        `restore wall ${restoreWall.toFixed(2)} s`,
    );
  });
});
