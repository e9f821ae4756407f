/**
 * Disaster recovery of the control plane (issue 15's acceptance): backups of three volumes from site-a
 * to site-b (one chain in an RBD namespace) through a real coordinator and agents; the coordinator is
 * stopped and its catalog file deleted; a fresh coordinator on an empty catalog rebuilds it from
 * site-b's meta objects. Every backup comes back with its chain and restores byte-identical to the
 * source at its snapshot (sums taken at backup time); a meta object overwritten with garbage (`rados
 * put`) is reported skipped with its reason, and its child is imported without it (a warning names it);
 * a chain whose full backup was deleted (as retention does) comes back without it; a dry run writes
 * nothing; a second rebuild finds everything present; the next AUTO backup continues the rebuilt chain.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Status } from "nice-grpc-common";
import { metaObjectName } from "../../../src/common/ids";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceClient,
  BackupStatus,
  ListBackupsRequest,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, freePort, startCoordinator, succeeded, waitAgents } from "../../helpers/coordinator";
import { connectLab, labCluster, rbd, uniqueName } from "../../helpers/lab";
import { sha, spec, Volumes } from "../../helpers/volumes";

const execFileP = promisify(execFile);
const POOL = "backups";

/** A backup made through coordinator #1, with the sum of its source at its snapshot. */
interface Made {
  backup: Backup;
  sum: string;
  /** Where the source volume is. */
  volume: ImageRef;
}

describe("catalog rebuild from a backup cluster (control plane DR)", () => {
  const vols = new Volumes();
  const ns = uniqueName("rebuild");
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-rebuild-"));
  const running: Array<{ stop(): Promise<void> }> = [];
  const made: Made[] = [];
  /** Backups whose stored data this test must remove at the end (ids, with where they are). */
  const stored: Array<{ id: string; namespace: string; baseImage: string }> = [];
  let listen = "";
  let coord: CoordinatorProcess;
  let agents: RunningAgent[] = [];

  async function backupOf(api: BackupServiceClient, v: ImageRef, namespace: string, mode: BackupMode): Promise<Made> {
    const req = backupRequest(
      { cluster: "site-a", ...v },
      {
        location: { cluster: "site-b", pool: POOL, namespace },
        mode,
        volumeId: `cinder-${v.image}`,
        volumeMetadata: { app: "rebuild-test", ns },
      },
    );
    const job = await succeeded(api, (await api.createBackup(req)).id);
    const backup = await api.getBackup({ backupId: job.backupId });
    stored.push({ id: backup.id, namespace, baseImage: backup.baseImage });
    // The source keeps only the newest backup snapshot: take its sum now.
    return { backup, sum: await sha("site-a", spec(v, backup.snapshot)), volume: v };
  }

  async function chainOf(api: BackupServiceClient, namespace: string, incrementals: number): Promise<Made[]> {
    const v = await vols.create("site-a", "rbd", 8, 6);
    const out = [await backupOf(api, v, namespace, BackupMode.BACKUP_MODE_FULL)];
    for (let i = 0; i < incrementals; i++) {
      await vols.change(v, "site-a", { writes: 4, discards: 1 });
      out.push(await backupOf(api, v, namespace, BackupMode.BACKUP_MODE_INCREMENTAL));
    }
    return out;
  }

  const startFresh = async () => {
    coord = await startCoordinator({ listen });
    running.push(coord);
    await waitAgents(coord.client, 2, 60_000);
  };

  before(async () => {
    await rbd("site-b", ["namespace", "create", `${POOL}/${ns}`]);
    listen = `127.0.0.1:${await freePort()}`;
    coord = await startCoordinator({ listen });
    running.push(coord);
    agents = [await startAgent("site-a", { coordinator: listen }), await startAgent("site-b", { coordinator: listen })];
    running.push(...agents);
    await waitAgents(coord.client, 2);
  });

  after(async () => {
    for (const p of running.reverse()) await p.stop().catch(() => {});
    await vols.cleanup();
    await removeStored(stored).catch((e) => console.log(`# cleanup of site-b: ${e}`));
    await rbd("site-b", ["namespace", "remove", `${POOL}/${ns}`]).catch((e) => console.log(`# namespace: ${e}`));
    rmSync(tmp, { recursive: true, force: true });
  });

  let damaged: Made[] = [];
  /** A chain whose full backup was deleted before the catalog was lost: its incremental is what is left. */
  let pruned: Made[] = [];
  /** The incrementals that come back without their parent. */
  const orphans = (): [Made, Made] => [damaged[1] as Made, pruned[1] as Made];

  it("backups of three volumes (one chain in an RBD namespace) through coordinator #1", async () => {
    made.push(...(await chainOf(coord.client, "", 2)), ...(await chainOf(coord.client, ns, 1)));
    damaged = await chainOf(coord.client, "", 1);
    pruned = await chainOf(coord.client, "", 1);
    assert.equal(made.length, 5);
    for (const m of [...made, ...damaged, ...pruned]) {
      assert.equal(m.backup.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    }
    // As retention does: the chain's oldest backup deleted, its incremental kept.
    const full = pruned[0]?.backup as Backup;
    await succeeded(coord.client, (await coord.client.deleteBackup({ backupId: full.id, idempotencyKey: "" })).id);
  });

  it("coordinator #1 stopped and its catalog deleted; one meta object overwritten with garbage", async () => {
    const catalogPath = coord.catalogPath;
    await coord.stop();
    running.splice(running.indexOf(coord), 1);
    for (const f of [catalogPath, `${catalogPath}-wal`, `${catalogPath}-shm`]) rmSync(f, { force: true });
    const garbage = path.join(tmp, "garbage");
    writeFileSync(garbage, "\u0000\u0001 this is not a backup meta {{{");
    const full = damaged[0]?.backup as Backup;
    await execFileP("rados", ["-c", labCluster("site-b").conf, "-p", POOL, "put", metaObjectName(full.id), garbage], {
      timeout: 60_000,
    });
    await startFresh();
    const list = await coord.client.listBackups(ListBackupsRequest.fromPartial({ pageSize: 10 }));
    assert.equal(list.backups.length, 0, "the fresh coordinator starts on an empty catalog");
  });

  it("dry run: reports every backup and the damaged ones, writes nothing (also through the CLI)", async () => {
    const r = await coord.client.rebuildCatalog({ cluster: "site-b", pools: [POOL], dryRun: true });
    const imported = new Set(r.imported.map((f) => f.backupId));
    for (const m of made) assert.ok(imported.has(m.backup.id), `${m.backup.id} would be imported`);
    assertDamagedSkipped(r.skipped, damaged);
    const list = await coord.client.listBackups(ListBackupsRequest.fromPartial({ pageSize: 10 }));
    assert.equal(list.backups.length, 0, "a dry run writes nothing");

    const tls = labTls("test-client"); // admin
    const cli = spawnSync(
      process.execPath,
      [
        path.join(repoRoot, "dist/src/cli/main.js"),
        "catalog",
        "rebuild",
        "--cluster",
        "site-b",
        "--pool",
        POOL,
        "--dry-run",
        "--json",
      ],
      {
        encoding: "utf8",
        timeout: 120_000,
        env: {
          ...process.env,
          RBDBACKUP_COORDINATOR: coord.address,
          RBDBACKUP_TLS_CA: tls.ca as string,
          RBDBACKUP_TLS_CERT: tls.cert as string,
          RBDBACKUP_TLS_KEY: tls.key as string,
        },
      },
    );
    assert.equal(cli.status, 0, cli.stderr);
    const json = JSON.parse(cli.stdout) as { found: number; imported: Array<{ backupId: string }> };
    assert.ok(json.imported.some((f) => f.backupId === made[0]?.backup.id));
    assert.match(cli.stderr, /warning: \d+ meta object\(s\) skipped/);
    assert.equal((await coord.client.listBackups(ListBackupsRequest.fromPartial({ pageSize: 10 }))).backups.length, 0);
  });

  it("rebuild: every backup back with its chain, as coordinator #1 recorded it; the damaged one skipped, its child and the pruned chain imported", async () => {
    const r = await coord.client.rebuildCatalog({ cluster: "site-b", pools: [POOL], dryRun: false });
    console.log(
      `# rebuild of site-b/${POOL}: found ${r.found}, imported ${r.imported.length}, skipped ${r.skipped.length}`,
    );
    assertDamagedSkipped(r.skipped, damaged);
    for (const gone of [damaged[0], pruned[0]] as Made[]) {
      const e = await coord.client.getBackup({ backupId: gone.backup.id }).catch((x) => x);
      assert.equal(e.code, Status.NOT_FOUND, `${gone.backup.id} is not imported`);
    }
    const [child, rest] = orphans();
    for (const [m, why] of [
      [child, `is not imported \\(meta object does not parse`],
      [rest, "is neither in the catalog nor found \\(deleted\\)"],
    ] as const) {
      const b = await coord.client.getBackup({ backupId: m.backup.id });
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      assert.equal(b.incremental, true);
      assert.equal(b.baseImage, m.backup.baseImage);
      assert.match(b.warnings.join("\n"), new RegExp(`its parent backup [0-9a-f-]+ ${why}`), m.backup.id);
    }
    for (const { backup: was } of made) {
      const b = await coord.client.getBackup({ backupId: was.id });
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      for (const k of ["volume", "location", "locationFsid", "baseImage", "snapshot", "incremental"] as const) {
        assert.deepEqual(b[k], was[k], `${was.id} ${k}`);
      }
      for (const k of ["parentSnapshot", "sizeBytes", "volumeId", "volumeMetadata", "forcedFullReason"] as const) {
        assert.deepEqual(b[k], was[k], `${was.id} ${k}`);
      }
      assert.equal(b.integrity?.imageDigest, was.integrity?.imageDigest, `${was.id} digest`);
      assert.equal(b.integrity?.digestBlockSize, was.integrity?.digestBlockSize);
    }
    const mine = new Set(made.map((m) => m.backup.id));
    assert.equal(r.imported.filter((f) => mine.has(f.backupId)).length, 5);
  });

  it("each rebuilt backup restores byte-identical to its source at its snapshot", async () => {
    for (const m of [...made, ...orphans()]) {
      const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("rebuilt") };
      vols.track("site-b", "rbd", target.image);
      const req = { backupId: m.backup.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" };
      await succeeded(coord.client, (await coord.client.restoreBackup(req)).id);
      assert.equal(await sha("site-b", spec(target)), m.sum, `restore of ${m.backup.id}`);
    }
  });

  it("a second rebuild reports everything present; the next AUTO backup continues the rebuilt chain", async () => {
    const r = await coord.client.rebuildCatalog({ cluster: "site-b", pools: [POOL], dryRun: false });
    const present = new Set(r.present.map((f) => f.backupId));
    for (const m of made) assert.ok(present.has(m.backup.id), `${m.backup.id} present`);
    assert.ok(!r.imported.some((f) => made.some((m) => m.backup.id === f.backupId)));
    assertDamagedSkipped(r.skipped, damaged);

    const last = made[2] as Made;
    await vols.change(last.volume, "site-a", { writes: 3 });
    const next = await backupOf(coord.client, last.volume, "", BackupMode.BACKUP_MODE_AUTO);
    assert.equal(next.backup.incremental, true, next.backup.forcedFullReason);
    assert.equal(next.backup.parentSnapshot, last.backup.snapshot);
    assert.equal(next.backup.baseImage, last.backup.baseImage);
  });
});

function assertDamagedSkipped(skipped: Array<{ backupId: string; reason: string }>, damaged: Made[]): void {
  const [full, child] = damaged as [Made, Made];
  const reason = (id: string) => skipped.find((f) => f.backupId === id)?.reason ?? "(not skipped)";
  assert.match(
    reason(full.backup.id),
    new RegExp(`^meta object does not parse: backup\\.${full.backup.id}\\.meta is not valid JSON`),
  );
  assert.equal(reason(child.backup.id), "(not skipped)", "its child is imported without it");
}

/** Removes base images (with their snapshots) and meta/digest objects this test left on site-b. */
async function removeStored(stored: Array<{ id: string; namespace: string; baseImage: string }>): Promise<void> {
  const c = await connectLab("site-b");
  try {
    for (const namespace of new Set(stored.map((s) => s.namespace))) {
      const io = await c.openIoCtx(POOL, { namespace });
      try {
        const mine = stored.filter((s) => s.namespace === namespace);
        for (const base of new Set(mine.map((s) => s.baseImage))) {
          const img = await io.imageOpen(base).catch(() => null);
          if (img) {
            for (const s of await img.snapList().catch(() => [])) await img.snapRemove(s.name).catch(() => {});
            await img.close().catch(() => {});
          }
          await io.imageRemove(base).catch(() => {});
        }
        for (const s of mine) {
          for (const oid of [metaObjectName(s.id), `backup.${s.id}.digests`]) await io.objRemove(oid).catch(() => {});
        }
      } finally {
        await io.close();
      }
    }
  } finally {
    await c.close();
  }
}
