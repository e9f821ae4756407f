/**
 * The coordinator's /metrics after real jobs: job counters by operation and result, byte counters
 * equal to what the jobs reported, agents connected, queue gauges, and the per-volume last-success
 * timestamp (one series per backed-up volume).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { backupRequest, type Deployment, deploy, removeBackups, scrape, succeeded } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { Volumes } from "../../helpers/volumes";

/** The value of one series (exact label set, in the order prom-client prints them), or undefined. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("coordinator metrics", () => {
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

  it("counts jobs and bytes as the jobs report them; last success per volume", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 16, 12);
    const j = await succeeded(c, (await c.createBackup(backupRequest({ cluster: "site-a", ...v }))).id);
    const b = j.backup;
    assert.ok(b);
    const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
    vols.track("site-b", "rbd", target.image);
    const rj = await succeeded(
      c,
      (await c.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" })).id,
    );

    const text = await scrape(d.coord.metricsAddress);
    assert.equal(value(text, 'rbdbackup_jobs_started_total{operation="backup"}'), 1);
    assert.equal(value(text, 'rbdbackup_jobs_finished_total{operation="backup",result="succeeded"}'), 1);
    assert.equal(value(text, 'rbdbackup_jobs_finished_total{operation="restore",result="succeeded"}'), 1);
    assert.equal(value(text, 'rbdbackup_job_data_bytes_total{operation="backup"}'), b.dataBytesSent);
    assert.equal(value(text, 'rbdbackup_job_data_bytes_total{operation="restore"}'), rj.restore?.dataBytesSent);
    assert.ok(b.dataBytesSent > 0);
    assert.equal(value(text, 'rbdbackup_agents_connected{cluster="site-a"}'), 1);
    assert.equal(value(text, 'rbdbackup_agents_connected{cluster="site-b"}'), 1);
    assert.equal(value(text, 'rbdbackup_jobs{operation="backup",state="queued"}'), 0);
    assert.equal(value(text, "rbdbackup_oldest_queued_job_age_seconds"), 0);
    const last = value(
      text,
      `rbdbackup_last_success_timestamp_seconds{cluster="site-a",pool="rbd",namespace="",image="${v.image}"}`,
    );
    assert.equal(last, (b.completedAt?.getTime() ?? 0) / 1000);
    assert.match(text, /rbdbackup_build_info\{version="[^"]+",role="coordinator"\} 1/);
    assert.match(text, /rbdbackup_job_duration_seconds_count\{operation="backup",result="succeeded"\} 1/);
    assert.ok(!/job_id|backup_id/.test(text), "no job or backup id in any label");

    // The agents' byte counters agree with the job too (the source counted what it sent).
    const agentA = await scrape(d.agents[0]?.metricsAddress as string);
    assert.equal(value(agentA, 'rbdbackup_sent_bytes_total{pool="rbd",cluster="site-a"}'), b.dataBytesSent);
  });
});
