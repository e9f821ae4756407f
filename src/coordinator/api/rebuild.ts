/**
 * RebuildCatalog: the control plane's disaster recovery. The request is checked (cluster required and
 * known, pool names valid), an agent of the cluster scans its meta objects (rebuild/scan.ts), the
 * planner decides what to import, keep or skip (rebuild/plan.ts), and — unless dry_run — the writer
 * commits the imports one chain per transaction (rebuild/write.ts). UNAVAILABLE when no agent of the
 * cluster is connected.
 */
import type { CallContext } from "nice-grpc-common";
import type { RebuildCatalogRequest, RebuildCatalogResponse } from "../../gen/rbdbackup/v1/backup_service";
import { knownClusters } from "../catalog/catalog";
import { planRebuild } from "../rebuild/plan";
import { scanCluster } from "../rebuild/scan";
import { writePlan } from "../rebuild/write";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

export async function rebuildCatalog(
  deps: ApiDeps,
  adm: Admission,
  req: RebuildCatalogRequest,
  ctx: CallContext,
): Promise<RebuildCatalogResponse> {
  v.clusterName(req.cluster, "cluster");
  for (const [i, p] of req.pools.entries()) v.rbdName(p, `pools[${i}]`);
  adm.knownCluster(req.cluster, "cluster");
  const agent = deps.sessions.any(req.cluster);
  const scan = await scanCluster(agent, req.pools, ctx.signal);
  // Names and fsids from the pins (they outlive a forgotten agent), then agents' records.
  const clusters = knownClusters(deps.catalog);
  const plan = planRebuild({
    cluster: req.cluster,
    fsid: scan.fsid || agent.info.clusterFsid,
    scanned: scan.backups,
    inCatalog: (id) => deps.catalog.getBackup(id),
    clusters: {
      nameOfFsid: (fsid) => clusters.find((c) => c.fsid === fsid)?.name,
      fsidOfName: (name) => clusters.find((c) => c.name === name)?.fsid,
    },
    now: new Date(),
  });
  let { imported, present } = plan;
  if (!req.dryRun) {
    const out = await writePlan(deps.catalog, plan, ctx.signal);
    // A backup another writer recorded meanwhile counts as present, not imported.
    present = [...present, ...imported.filter((f) => out.present.has(f.backupId))];
    imported = imported.filter((f) => !out.present.has(f.backupId));
  }
  deps.log.info(req.dryRun ? "catalog rebuild (dry run)" : "catalog rebuilt", {
    cluster: req.cluster,
    pools: req.pools,
    found: plan.found,
    imported: imported.length,
    present: present.length,
    skipped: plan.skipped.length,
  });
  for (const s of plan.skipped) deps.log.warn("catalog rebuild skipped a backup", { ...s });
  return { imported, present, skipped: plan.skipped, found: plan.found, volumes: plan.volumes };
}
