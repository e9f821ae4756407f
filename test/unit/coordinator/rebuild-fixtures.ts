/**
 * Meta objects and scan results for the catalog rebuild's unit tests: version 1 metas as the agents
 * write them (agents/engine/backup-header.ts), wrapped as an agent's scan_backups reports them.
 */
import { randomUUID } from "node:crypto";
import { backupSnapName } from "../../../src/common/ids";
import type { Backup } from "../../../src/coordinator/model";
import type { PlanInput } from "../../../src/coordinator/rebuild/plan";
import type { ScannedBackup } from "../../../src/gen/rbdbackup/v1/session";

export const FSID_A = "aaaaaaaa-0000-4000-8000-000000000001";
export const FSID_B = "bbbbbbbb-0000-4000-8000-000000000002";
export const T0 = Date.UTC(2026, 11, 1);

export interface MetaOpts {
  id?: string;
  image?: string;
  parent?: string;
  base?: string;
  at?: number;
  clusterName?: string;
  fsid?: string;
}

/** A version 1 meta of a volume backup (as agents/engine/backup-header.ts writes it). */
export function meta(o: MetaOpts = {}) {
  const id = o.id ?? randomUUID();
  const image = o.image ?? "vol1";
  const at = o.at ?? T0;
  const base = o.base ?? `${image}.backup.${id}`;
  return {
    version: 1,
    backup_id: id,
    created_at: new Date(at).toISOString(),
    volume: { id: `cinder-${image}`, metadata: { tier: "gold" } },
    source: {
      kind: "rbd",
      cluster_fsid: o.fsid ?? FSID_A,
      ...(o.clusterName !== undefined ? { cluster_name: o.clusterName } : {}),
      pool: "rbd",
      namespace: "",
      image,
      snapshot: backupSnapName(id, at),
    },
    image: { size: 4 << 20, features: "61", order: 22, stripe_unit: 0, stripe_count: 0, image_meta: {} },
    chain: {
      base_image: base,
      incremental: o.parent !== undefined,
      parent_snapshot: o.parent ?? null,
      snapshot: backupSnapName(id, at),
    },
  };
}

export type Meta = ReturnType<typeof meta>;

export function scanned(m: Meta | { raw: string; id: string }, o: Partial<ScannedBackup> = {}): ScannedBackup {
  const raw = "raw" in m ? m.raw : JSON.stringify(m);
  const id = "raw" in m ? m.id : m.backup_id;
  return {
    pool: "backups",
    namespace: "",
    backupId: id,
    meta: Buffer.from(raw),
    metaError: "",
    snapshotExists: true,
    digestsExists: false,
    digestsSha256: "",
    digestBlockSize: 0,
    digestsError: "",
    ...o,
  };
}

/** A full backup and `n` incrementals on its base image, 1 s apart. */
export function chain(n: number, image = "vol1"): Meta[] {
  const full = meta({ image });
  const out = [full];
  for (let i = 1; i <= n; i++) {
    const prev = out[i - 1] as Meta;
    out.push(meta({ image, parent: prev.chain.snapshot, base: full.chain.base_image, at: T0 + i * 1000 }));
  }
  return out;
}

/** The planner's input: `scan` found on site-b, `catalog` already held; sites a and b known. */
export function input(scan: ScannedBackup[], catalog: Backup[] = [], o: Partial<PlanInput> = {}): PlanInput {
  const byId = new Map(catalog.map((b) => [b.id, b]));
  return {
    cluster: "site-b",
    fsid: FSID_B,
    scanned: scan,
    inCatalog: (id) => byId.get(id),
    clusters: {
      nameOfFsid: (f) => (f === FSID_A ? "site-a" : f === FSID_B ? "site-b" : undefined),
      fsidOfName: (n) => (n === "site-a" ? FSID_A : n === "site-b" ? FSID_B : undefined),
    },
    now: new Date(T0 + 3_600_000),
    ...o,
  };
}
