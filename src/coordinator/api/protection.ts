/**
 * GetVolumeProtection and ListVolumeProtection: each (policy, volume) protection record the runner keeps,
 * shown through the policy's status rules (../policy/status.ts protectionView) with the volume's newest
 * available backup at the policy's destination, and its verification (../policy/verify-schedule.ts).
 */
import { failedPrecondition, invalidArgument, notFound } from "../../common/errors";
import {
  type GetVolumeProtectionRequest,
  type ListVolumeProtectionRequest,
  type ListVolumeProtectionResponse,
  type Policy,
  ProtectionState,
  type VolumeProtection,
} from "../../gen/rbdbackup/v1/policy";
import { volumeLabel } from "../model";
import { defaultPoolOf, type ProtectionRecord, volumeKey } from "../policy/model";
import { recoveryPoint } from "../policy/recovery-point";
import { protectionView } from "../policy/status";
import { policyName } from "../policy/validate";
import { verifyStatus } from "../policy/verify-schedule";
import * as v from "../validate";
import type { ApiDeps } from "./deps";

export function view(
  deps: ApiDeps,
  p: Policy,
  rec: ProtectionRecord,
  defaultPool = defaultPoolOf(deps.sessions, deps.catalog.listAgents()),
): VolumeProtection {
  const pv = protectionView(p, rec, recoveryPoint(deps.catalog, p, rec.volume, defaultPool), Date.now());
  return { ...pv, ...verifyStatus(deps.catalog, p, rec.volume, defaultPool) };
}

export function getVolumeProtection(deps: ApiDeps, req: GetVolumeProtectionRequest): VolumeProtection {
  const vol = v.volumeRef(req.volume, "volume", { lookup: true });
  const key = volumeKey(vol);
  const store = deps.catalog.policies;
  if (req.policy) {
    policyName(req.policy, "policy");
    const p = store.getPolicy(req.policy);
    if (!p) throw notFound(`policy ${req.policy} not found`);
    const rec = store.getProtection(p.name, key);
    if (!rec) throw notFound(`volume ${volumeLabel(vol)} is not protected by policy ${p.name}`);
    return view(deps, p, rec);
  }
  const recs = store.protectionOfVolume(key);
  const [rec] = recs;
  if (!rec) throw notFound(`volume ${volumeLabel(vol)} is not protected by any policy`);
  if (recs.length > 1) {
    throw failedPrecondition(
      `volume ${volumeLabel(vol)} is in ${recs.length} policies (${recs.map((r) => r.policy).join(", ")}): name one with policy`,
    );
  }
  const p = store.getPolicy(rec.policy);
  if (!p) throw notFound(`policy ${rec.policy} not found`);
  return view(deps, p, rec);
}

/**
 * Records by (policy, volume), paged by the store. With a state filter a page may hold fewer than
 * page_size (the state is computed, not stored): follow next_page_token until it is empty.
 */
export function listVolumeProtection(deps: ApiDeps, req: ListVolumeProtectionRequest): ListVolumeProtectionResponse {
  if (req.policy) policyName(req.policy, "policy");
  if (req.cluster) v.clusterName(req.cluster, "cluster");
  if (!Number.isInteger(req.state) || req.state < 0 || !(req.state in ProtectionState)) {
    throw invalidArgument(`state: unknown value ${req.state}`);
  }
  const size = v.pageSize(req.pageSize);
  const filter = { ...(req.policy ? { policy: req.policy } : {}), ...(req.cluster ? { cluster: req.cluster } : {}) };
  const page = v.page(() => deps.catalog.policies.listProtection(filter, size, req.pageToken));
  const policies = new Map<string, Policy | undefined>();
  const volumes: VolumeProtection[] = [];
  const defaultPool = defaultPoolOf(deps.sessions, deps.catalog.listAgents());
  for (const rec of page.items) {
    if (!policies.has(rec.policy)) policies.set(rec.policy, deps.catalog.policies.getPolicy(rec.policy));
    const p = policies.get(rec.policy);
    if (!p) continue;
    const pv = view(deps, p, rec, defaultPool);
    if (!req.state || pv.state === req.state) volumes.push(pv);
  }
  return { volumes, nextPageToken: page.next };
}
