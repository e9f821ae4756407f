/**
 * The catalog rebuild planner, pure: scanned meta objects (as an agent's scan_backups returns them)
 * and a catalog lookup in; present / import / skip with reasons, and chains parents-first, out.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import type { Backup } from "../../../src/coordinator/model";
import { planRebuild } from "../../../src/coordinator/rebuild/plan";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { chain, FSID_B, input, type Meta, meta, scanned, T0 } from "./rebuild-fixtures";

const ids = (fs: Array<{ backupId: string }>) => fs.map((f) => f.backupId).sort();
const reasonOf = (p: ReturnType<typeof planRebuild>, id: string) => p.skipped.find((f) => f.backupId === id)?.reason;

describe("catalog rebuild planner", () => {
  it("imports a full backup and its incrementals as one chain, parents first, with what the meta holds", () => {
    const c = chain(2);
    const scan = [...c]
      .reverse()
      .map((m, i) =>
        scanned(m, i === 0 ? { digestsExists: true, digestsSha256: "ab".repeat(32), digestBlockSize: 65536 } : {}),
      );
    const p = planRebuild(input(scan));
    assert.equal(p.found, 3);
    assert.deepEqual(ids(p.imported), ids(c.map((m) => ({ backupId: m.backup_id }))));
    assert.equal(p.skipped.length, 0);
    assert.equal(p.volumes, 1);
    assert.equal(p.chains.length, 1);
    const written = p.chains[0]?.backups ?? [];
    assert.deepEqual(
      written.map((b) => b.id),
      c.map((m) => m.backup_id),
      "parents before children",
    );
    const [full, , last] = written as [Backup, Backup, Backup];
    assert.equal(full.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.deepEqual(full.volume, { cluster: "site-a", pool: "rbd", namespace: "", image: "vol1" });
    assert.deepEqual(full.location, { cluster: "site-b", pool: "backups", namespace: "" });
    assert.equal(full.locationFsid, FSID_B);
    assert.equal(full.volumeId, "cinder-vol1");
    assert.deepEqual(full.volumeMetadata, { tier: "gold" });
    assert.equal(full.baseImage, c[0]?.chain.base_image);
    assert.equal(full.incremental, false);
    assert.equal(full.sizeBytes, 4 << 20);
    assert.equal(full.createdAt?.getTime(), T0);
    assert.equal(full.integrity, undefined, "no digest map: no integrity digest");
    assert.match(full.warnings[0] ?? "", /rebuilt from backup\..*\.meta on site-b\/backups/);
    assert.equal(last.incremental, true);
    assert.equal(last.parentSnapshot, c[1]?.chain.snapshot);
    assert.equal(last.integrity?.imageDigest, "ab".repeat(32));
    assert.equal(last.integrity?.digestBlockSize, 65536);
  });

  it("counts volumes and makes one chain per base image", () => {
    const p = planRebuild(input([...chain(1, "vol1"), ...chain(2, "vol2")].map((m) => scanned(m))));
    assert.equal(p.imported.length, 5);
    assert.equal(p.volumes, 2);
    assert.deepEqual(p.chains.map((c) => c.backups.length).sort(), [2, 3]);
  });

  it("a damaged meta is skipped with its reason; its children are imported without it, a warning naming it", () => {
    const [full, inc1, inc2] = chain(2) as [Meta, Meta, Meta];
    const scan = [scanned({ raw: "\u0000garbage{", id: full.backup_id }), scanned(inc1), scanned(inc2)];
    const p = planRebuild(input(scan));
    assert.match(reasonOf(p, full.backup_id) ?? "", /^meta object does not parse: not JSON/);
    assert.deepEqual(ids(p.imported), ids([{ backupId: inc1.backup_id }, { backupId: inc2.backup_id }]));
    const written = p.chains[0]?.backups ?? [];
    assert.deepEqual(
      written.map((b) => b.id),
      [inc1.backup_id, inc2.backup_id],
      "parents before children",
    );
    assert.match(
      written[0]?.warnings.join("\n") ?? "",
      new RegExp(`its parent backup ${full.backup_id} is not imported \\(meta object does not parse`),
    );
    assert.equal(written[1]?.warnings.length, 1, "its own parent was imported with it: only the rebuild line");
    assert.equal(written[1]?.parentSnapshot, inc1.chain.snapshot);
  });

  it("skips what the agent could not read, and metas missing fields, naming what is wrong", () => {
    const a = meta();
    const b = meta();
    const c = meta();
    const noSize = { ...b, image: { ...b.image, size: "big" } };
    const otherId = { ...c, backup_id: randomUUID() };
    const d = meta();
    const farFuture = { ...d, created_at: "+010000-01-01T00:00:00.000Z" };
    const e = meta();
    const liveVolume = { ...e, chain: { ...e.chain, base_image: "vol1" } };
    const f = meta();
    const unreadable = `backup.${f.backup_id}.meta could not be read: rados_read failed: Input/output error (EIO)`;
    const p = planRebuild(
      input([
        scanned(f, { metaError: unreadable }),
        scanned(a, { metaError: "backup.x.meta has incompatible version 7" }),
        scanned({ raw: JSON.stringify(noSize), id: b.backup_id }),
        scanned({ raw: JSON.stringify(otherId), id: c.backup_id }),
        scanned({ raw: JSON.stringify(farFuture), id: d.backup_id }),
        scanned({ raw: JSON.stringify(liveVolume), id: e.backup_id }),
      ]),
    );
    assert.equal(
      reasonOf(p, e.backup_id),
      'meta object does not parse: chain.base_image "vol1" is not a base image of vol1 (<volume>.backup.<uuid>)',
    );
    assert.equal(reasonOf(p, d.backup_id), "meta object does not parse: created_at is not a date in 1970-9999");
    assert.equal(reasonOf(p, a.backup_id), "meta object does not parse: backup.x.meta has incompatible version 7");
    assert.equal(reasonOf(p, b.backup_id), "meta object does not parse: image.size is not a size");
    assert.match(reasonOf(p, c.backup_id) ?? "", /backup_id ".*" is not the object's id/);
    assert.equal(reasonOf(p, f.backup_id), unreadable, "what could not be read says so, not 'does not parse'");
  });

  it("skips a meta whose volume the API would refuse (names, volume id and metadata as ImportBackupRecord checks them)", () => {
    const bad: Array<[string, (m: Meta) => unknown, RegExp]> = [
      ["a NUL in the volume id", (m) => ({ ...m, volume: { ...m.volume, id: "a\u0000b" } }), /volume_id contains NUL/],
      [
        "a NUL in a metadata value",
        (m) => ({ ...m, volume: { ...m.volume, metadata: { k: "x\u0000" } } }),
        /volume_metadata\["k"\] contains NUL/,
      ],
      [
        "a '/' in the source pool",
        (m) => ({ ...m, source: { ...m.source, pool: "a/b" } }),
        /source\.pool "a\/b" holds a "\/", "@" or NUL/,
      ],
      [
        "a source image named like a base image",
        (m) => {
          const image = `v.backup.${randomUUID()}`;
          return {
            ...m,
            source: { ...m.source, image },
            chain: { ...m.chain, base_image: `${image}.backup.${m.backup_id}` },
          };
        },
        /source\.image ".*" is named like a base image/,
      ],
      [
        "a bad cluster name",
        (m) => ({ ...m, source: { ...m.source, cluster_name: "site a" } }),
        /source\.cluster_name "site a"/,
      ],
    ];
    for (const [what, change, reason] of bad) {
      const m = meta();
      const p = planRebuild(input([scanned({ raw: JSON.stringify(change(m)), id: m.backup_id })]));
      assert.match(reasonOf(p, m.backup_id) ?? "(imported)", reason, what);
    }
    // A name Ceph has and a policy's discovery backed up (surrounding spaces, a tab) comes back.
    const spaced = meta({ image: " vm\tdisk " });
    const p = planRebuild(input([scanned(spaced)]));
    assert.deepEqual(ids(p.imported), [spaced.backup_id], reasonOf(p, spaced.backup_id));
  });

  it("skips a backup whose snapshot is missing on its base image", () => {
    const m = meta();
    const p = planRebuild(input([scanned(m, { snapshotExists: false })]));
    assert.equal(
      reasonOf(p, m.backup_id),
      `snapshot ${m.chain.snapshot} missing on base image backups/${m.chain.base_image}`,
    );
  });

  it("retention deleted a chain's oldest backups: the rest is imported as a chain, the oldest left noting its parent is gone", () => {
    const [, , inc2, inc3] = chain(3) as [Meta, Meta, Meta, Meta];
    const p = planRebuild(input([scanned(inc3), scanned(inc2)]));
    assert.equal(p.skipped.length, 0);
    const written = p.chains[0]?.backups ?? [];
    assert.deepEqual(
      written.map((b) => b.id),
      [inc2.backup_id, inc3.backup_id],
    );
    const parentId = /^backup\.(.+?)\.snap/.exec(inc2.chain.parent_snapshot ?? "")?.[1];
    assert.match(
      written[0]?.warnings[1] ?? "",
      new RegExp(`its parent backup ${parentId} is neither in the catalog nor found \\(deleted\\)`),
    );
    assert.equal(written[0]?.incremental, true, "as its meta records it");
    assert.equal(written[0]?.parentSnapshot, inc2.chain.parent_snapshot);
  });

  it("imports an incremental whose parent is in the catalog; refuses one whose parent is on another base image", () => {
    const [full, inc] = chain(1) as [Meta, Meta];
    const held = { id: full.backup_id, baseImage: full.chain.base_image } as Backup;
    const p = planRebuild(input([scanned(inc)], [held]));
    assert.deepEqual(ids(p.imported), [inc.backup_id]);
    const elsewhere = { id: full.backup_id, baseImage: "other.backup.x" } as Backup;
    const q = planRebuild(input([scanned(inc)], [elsewhere]));
    assert.match(reasonOf(q, inc.backup_id) ?? "", /is on base image other\.backup\.x/);
  });

  it("leaves backups the catalog holds as they are (present), and counts their volumes", () => {
    const [full, inc] = chain(1) as [Meta, Meta];
    const held = {
      id: full.backup_id,
      baseImage: full.chain.base_image,
      volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol1" },
    } as Backup;
    const p = planRebuild(input([scanned(full), scanned(inc)], [held]));
    assert.deepEqual(ids(p.present), [full.backup_id]);
    assert.deepEqual(ids(p.imported), [inc.backup_id]);
    assert.equal(p.chains[0]?.backups.length, 1, "the present one is not written");
    assert.equal(p.volumes, 1);
  });

  it("a backup id found in two pools is skipped in both, unless the catalog holds it at one of them", () => {
    const m = meta();
    const scan = [scanned(m), scanned(m, { pool: "backups-ssd" })];
    const p = planRebuild(input(scan));
    assert.equal(p.skipped.length, 2);
    for (const f of p.skipped) assert.match(f.reason, /found in more than one place \(backups, backups-ssd\)/);
    const held = { id: m.backup_id, location: { cluster: "site-b", pool: "backups-ssd", namespace: "" } } as Backup;
    const q = planRebuild(input(scan, [held]));
    assert.deepEqual(
      q.present.map((f) => f.pool),
      ["backups-ssd"],
    );
    assert.match(q.skipped[0]?.reason ?? "", /the catalog holds it at backups-ssd/);
  });

  it("names the source cluster by fsid, else by the meta's cluster_name; skips when neither can", () => {
    const unknownFsid = "cccccccc-0000-4000-8000-000000000003";
    const named = meta({ fsid: unknownFsid, clusterName: "site-c" });
    const anonymous = meta({ fsid: unknownFsid });
    const clash = meta({ fsid: unknownFsid, clusterName: "site-a" });
    const p = planRebuild(input([scanned(named), scanned(anonymous), scanned(clash)]));
    assert.equal(p.chains[0]?.backups[0]?.volume?.cluster, "site-c");
    assert.match(reasonOf(p, anonymous.backup_id) ?? "", /^source cluster cccccccc-.* cannot be named/);
    assert.match(reasonOf(p, clash.backup_id) ?? "", /site-a is registered here with fsid aaaaaaaa/);
  });

  it("skips a backup of a file path (not a catalog volume)", () => {
    const m = meta();
    const path = { ...m, source: { kind: "path", path: "/srv/disk.img", name: "disk" } };
    const p = planRebuild(input([scanned({ raw: JSON.stringify(path), id: m.backup_id })]));
    assert.match(reasonOf(p, m.backup_id) ?? "", /source is a file \(\/srv\/disk\.img\)/);
  });

  it("a malformed digest map imports the backup without a digest, saying why", () => {
    const m = meta();
    const p = planRebuild(
      input([scanned(m, { digestsExists: true, digestsError: "digest map without its RBDDMAP1 magic" })]),
    );
    const b = p.chains[0]?.backups[0];
    assert.equal(b?.integrity, undefined);
    assert.ok(b?.warnings.some((w) => /digests is malformed \(digest map without its RBDDMAP1 magic\)/.test(w)));
  });
});
