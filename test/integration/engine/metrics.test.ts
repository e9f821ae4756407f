/** The agents' Prometheus endpoints after a real backup: the byte counters equal what the backup reports. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { get } from "node:http";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { type RunningAgent, startAgents } from "../../helpers/agents";
import { grpcStatus } from "../../helpers/grpc-status";
import { sample } from "../../helpers/metrics";
import { Volumes } from "../../helpers/volumes";

function scrape(address: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://${address}/metrics`, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => {
        body += d.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }));
    }).on("error", reject);
  });
}

describe("agent metrics", () => {
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

  it("byte counters equal the bytes the backup reports; operations, reasons and build info are there", async () => {
    const vol = await vols.create("site-a", "rbd", 16, 12);
    const r = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: "" },
      destinationPool: "backups",
    });
    vols.track("site-b", "backups", r.baseImage);
    const src = await scrape(a.metricsAddress);
    const dst = await scrape(b.metricsAddress);
    assert.equal(src.status, 200);
    assert.match(src.type, /^text\/plain; version=0\.0\.4/);
    const sl = { cluster: "site-a", pool: "rbd" };
    const dl = { cluster: "site-b", pool: "backups" };
    assert.equal(sample(src.body, "rbdbackup_sent_bytes_total", sl), r.dataBytesSent);
    assert.equal(sample(src.body, "rbdbackup_chunks_sent_total", sl), r.dataChunks);
    assert.equal(sample(src.body, "rbdbackup_source_read_bytes_total", sl), r.bytesRead);
    assert.equal(sample(src.body, "rbdbackup_zero_ranges_total", sl), r.zeroRanges);
    assert.equal(sample(src.body, "rbdbackup_zero_range_bytes_total", sl), r.zeroBytes);
    assert.equal(sample(dst.body, "rbdbackup_received_bytes_total", dl), r.dataBytesSent);
    assert.equal(sample(dst.body, "rbdbackup_written_bytes_total", dl), r.dataBytesSent);
    assert.equal(sample(src.body, "rbdbackup_agent_operations_total", { operation: "backup", result: "ok" }), 1);
    assert.equal(sample(src.body, "rbdbackup_forced_full_backups_total", { reason: "no_previous_backup" }), 1);
    assert.equal(sample(src.body, "rbdbackup_agent_operation_duration_seconds_count", { operation: "backup" }), 1);
    assert.equal(sample(src.body, "rbdbackup_build_info", { role: "agent" }), 1);
    assert.equal(sample(src.body, "rbdbackup_librbd_io_in_flight"), 0);
    assert.ok((sample(src.body, "rbdbackup_librbd_io_duration_seconds_count", { op: "read" }) ?? 0) > 0);
    assert.ok((sample(dst.body, "rbdbackup_librbd_io_duration_seconds_count", { op: "write" }) ?? 0) >= r.dataChunks);
    assert.ok((sample(src.body, "process_resident_memory_bytes") ?? 0) > 0);
    // No per-job or per-image labels anywhere.
    assert.doesNotMatch(src.body + dst.body, new RegExp(`${r.backupId}|${vol.image}`));

    // A failure counts by its status.
    await assert.rejects(
      a.client.backup({
        backupId: randomUUID(),
        source: { $case: "volume", value: { pool: "rbd", namespace: "", image: "nope" } },
        destination: { address: b.transferAddress, clusterFsid: "" },
      }),
      grpcStatus(Status.NOT_FOUND),
    );
    const after1 = await scrape(a.metricsAddress);
    assert.equal(
      sample(after1.body, "rbdbackup_agent_operations_total", { operation: "backup", result: "NOT_FOUND" }),
      1,
    );
  });

  it("other paths are 404", async () => {
    await new Promise<void>((resolve, reject) =>
      get(`http://${a.metricsAddress}/`, (res) => {
        assert.equal(res.statusCode, 404);
        res.resume();
        resolve();
      }).on("error", reject),
    );
  });
});
