/**
 * Wire compression between two real agents (ZSTD on the backup, LZ4 on the restore), called on the
 * agents directly with transfer_options: a volume holding compressible data (text-like blocks, some
 * random ones) backs up and restores byte-identical (sha256 of `rbd export`), and the agents' metrics
 * show fewer bytes on the wire than before compression on both sides.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { type RunningAgent, startAgents } from "../../helpers/agents";
import { scrape } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { sample } from "../../helpers/metrics";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

/** Text-like bytes (a log or database page: compresses several times over). */
function text(n: number, seed: number): Buffer {
  const lines: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const l = `${new Date(1_700_000_000_000 + (seed * 1000 + i) * 997).toISOString()} agent-${i % 7} wrote chunk ${i * 31 + seed} of volume vol-${seed % 5}: ok\n`;
    lines.push(l);
    len += l.length;
  }
  return Buffer.from(lines.join("")).subarray(0, n);
}

describe("wire compression between agents", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
  });

  it("ZSTD backup and LZ4 restore: byte-identical, fewer bytes on the wire, counted on both sides", async () => {
    const vol = await vols.create("site-a", "rbd", 32, 0, "compress");
    const io = await vols.io("site-a", "rbd");
    const img = await io.imageOpen(vol.image);
    try {
      // 24 MiB of text-like data, 2 MiB random (sent raw), the rest never written.
      for (let i = 0; i < 24; i++) await img.write(text(MiB, i), i * MiB);
      await img.write(randomBytes(2 * MiB), 26 * MiB);
      await img.flush();
    } finally {
      await img.close();
    }
    const r = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
      transferOptions: { compression: Compression.COMPRESSION_ZSTD, bandwidthLimitBytesPerSecond: 0 },
    });
    vols.track("site-b", "backups", r.baseImage);
    const original = await sha("site-a", spec(vol, r.snapshot));
    assert.equal(await sha("site-b", `backups/${r.baseImage}@${r.snapshot}`), original, "backup byte-identical");

    const target = { pool: "rbd", namespace: "", image: uniqueName("restored") };
    vols.track("site-a", "rbd", target.image);
    await b.client.restore({
      backupId: r.backupId,
      backupPool: "backups",
      targetAgent: { address: a.transferAddress, clusterFsid: a.fsid },
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
      transferOptions: { compression: Compression.COMPRESSION_LZ4, bandwidthLimitBytesPerSecond: 0 },
    });
    assert.equal(await sha("site-a", spec(target)), original, "restore byte-identical");

    const [ma, mb] = await Promise.all([scrape(a.metricsAddress), scrape(b.metricsAddress)]);
    const bytes = (body: string, kind: "raw" | "wire", direction: string, algorithm: string) =>
      sample(body, `rbdbackup_agent_transfer_${kind}_bytes_total`, { direction, algorithm }) ?? -1;
    for (const [src, dst, algorithm] of [
      [ma, mb, "zstd"],
      [mb, ma, "lz4"],
    ] as const) {
      const raw = bytes(src, "raw", "sent", algorithm);
      const wire = bytes(src, "wire", "sent", algorithm);
      assert.equal(raw, r.dataBytesSent, `${algorithm}: every data byte counted before compression`);
      assert.ok(wire > 2 * MiB && wire < raw / 2, `${algorithm}: ${wire} bytes on the wire for ${raw}`);
      assert.equal(bytes(dst, "raw", "received", algorithm), raw, `${algorithm}: the destination's count`);
      assert.equal(bytes(dst, "wire", "received", algorithm), wire);
    }
  });
});
