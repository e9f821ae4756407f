/**
 * What the policy metrics read per scrape: the newest backup a policy made of a volume (without reading
 * every backup's job), and the per-volume samples computed once for both gauges of one scrape.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import client from "prom-client";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { PolicyMetrics, type VolumeSample } from "../../../src/coordinator/policy/metrics";
import { newestPolicyBackup, policyBackups } from "../../../src/coordinator/policy/retention-jobs";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { Harness, vol } from "../coordinator/harness";

const gold = Policy.fromPartial({
  name: "gold",
  selector: { volumes: [vol("v1")] },
  destination: { cluster: "b", pool: "backups", namespace: "" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  schedule: { intervalSeconds: 60 },
  retention: { keepLast: 2 },
});

/** The catalog, counting getJob calls. */
function counting(c: Catalog): { catalog: Catalog; jobsRead: () => number } {
  let n = 0;
  const catalog = new Proxy(c, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === "getJob")
        return (id: string) => {
          n++;
          return target.getJob(id);
        };
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { catalog, jobsRead: () => n };
}

describe("newest policy backup", () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(() => h.close());

  /** A backup of v1 into b at `at`, made by a job keyed `key`, with `status`. */
  const backupAt = (at: number, key: string, status = BackupStatus.BACKUP_STATUS_AVAILABLE, cluster = "b") => {
    h.t = at;
    const j = h.queueBackup(vol("v1"), cluster);
    h.catalog.updateJob({ ...j, idempotencyKey: key });
    h.catalog.updateBackup({ ...h.backup(j.backupId), status });
    return j.backupId;
  };

  it("is the newest available backup the policy made at its destination, reading one job per candidate", () => {
    const t = Date.UTC(2026, 11, 1);
    backupAt(t, "pol:gold:1:a");
    const b2 = backupAt(t + 60_000, "pol:gold:2:b");
    backupAt(t + 90_000, "manual-1"); // newer, not the policy's
    backupAt(t + 100_000, "pol:silver:3:c"); // another policy's
    backupAt(t + 110_000, "pol:gold:4:d", BackupStatus.BACKUP_STATUS_DELETED);
    backupAt(t + 115_000, "pol:gold:5:e", BackupStatus.BACKUP_STATUS_CREATING);
    backupAt(t + 120_000, "pol:gold:6:f", BackupStatus.BACKUP_STATUS_AVAILABLE, "c"); // another cluster
    const { catalog, jobsRead } = counting(h.catalog);
    assert.equal(newestPolicyBackup(catalog, gold, vol("v1"))?.id, b2);
    assert.equal(jobsRead(), 3, "the jobs of manual-1, silver's and b2's");
    const all = policyBackups(catalog, gold, vol("v1"));
    assert.equal(all.length, 2);
    assert.equal(jobsRead(), 3 + 4, "policyBackups reads the job of every available backup at the destination");
    assert.equal(newestPolicyBackup(h.catalog, gold, vol("v2")), undefined);
  });

  it("agrees with policyBackups sorted newest first, ties included", () => {
    const t = Date.UTC(2026, 11, 1);
    for (let i = 0; i < 40; i++) {
      const at = t + Math.floor(i / 3) * 1000; // three backups per instant
      const key = i % 4 === 0 ? `manual-${i}` : `pol:gold:${i}:x`;
      const status = i % 5 === 0 ? BackupStatus.BACKUP_STATUS_DELETED : BackupStatus.BACKUP_STATUS_AVAILABLE;
      backupAt(at, key, status);
      const expected = policyBackups(h.catalog, gold, vol("v1")).sort(
        (a, b) => (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0),
      )[0];
      assert.equal(newestPolicyBackup(h.catalog, gold, vol("v1"))?.id, expected?.id, `after backup ${i}`);
    }
  });
});

describe("policy metrics", () => {
  it("one scrape computes the per-volume samples once for both gauges", async () => {
    let calls = 0;
    const samples = (): VolumeSample[] => {
      calls++;
      return [
        { ...vol("v1"), policy: "gold", ageSeconds: 42, state: "ok" },
        { ...vol("v2"), policy: "gold", ageSeconds: undefined, state: "pending" },
      ];
    };
    const registry = new client.Registry();
    for (const m of new PolicyMetrics(samples).all()) registry.registerMetric(m);
    const text = await registry.metrics();
    assert.equal(calls, 1);
    assert.match(text, /rbdbackup_volume_recovery_point_age_seconds\{[^}]*image="v1"[^}]*\} 42/);
    assert.match(text, /rbdbackup_volumes_protected\{policy="gold",state="ok"\} 1/);
    assert.match(text, /rbdbackup_volumes_protected\{policy="gold",state="pending"\} 1/);
  });
});
