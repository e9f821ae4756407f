/**
 * Protection policies on the public API: CreatePolicy, UpdatePolicy, GetPolicy, ListPolicies,
 * DeletePolicy, PausePolicy, ResumePolicy, RunPolicyNow (this file) and GetVolumeProtection /
 * ListVolumeProtection (protection.ts). A mutation validates the whole policy (../policy/validate.ts),
 * asks a connected agent whether the pools it names exist, then writes synchronously — the overlap with
 * other policies is checked again right before the write, so two concurrent creates cannot both pass —
 * and tells the runner (`deps.policies.changed`). The audit of these calls is api-audit.ts's.
 */
import type { CallContext } from "nice-grpc-common";
import { AppError, alreadyExists, failedPrecondition, notFound, Status, unavailable } from "../../common/errors";
import type { BackupServiceImplementation } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import {
  type CreatePolicyRequest,
  type ListPoliciesRequest,
  type ListPoliciesResponse,
  Policy,
  type RunPolicyNowRequest,
  type RunPolicyNowResponse,
  type UpdatePolicyRequest,
} from "../../gen/rbdbackup/v1/policy";
import { volumeLabel } from "../model";
import { defaultPoolOf, volumeKey } from "../policy/model";
import { reslot, sameSchedule } from "../policy/records";
import {
  type RetentionDrop,
  retentionDrop,
  retentionDropMessage,
  retentionScopeChanged,
} from "../policy/retention-drop";
import { withdrawRetentionDeletes } from "../policy/retention-jobs";
import { checkOverlap, type PolicyContext, policyName, validatePolicy } from "../policy/validate";
import * as v from "../validate";
import { isUniqueViolation } from "./admission";
import type { ApiDeps } from "./deps";
import { boundedPage, encodedSize } from "./paging";
import { probe } from "./probes";
import { getVolumeProtection, listVolumeProtection } from "./protection";

type PolicyMethods = Pick<
  BackupServiceImplementation,
  | "createPolicy"
  | "updatePolicy"
  | "getPolicy"
  | "listPolicies"
  | "deletePolicy"
  | "pausePolicy"
  | "resumePolicy"
  | "runPolicyNow"
  | "getVolumeProtection"
  | "listVolumeProtection"
>;

export const DEFAULT_MIN_INTERVAL_SECONDS = 30;

export function policyMethods(deps: ApiDeps): PolicyMethods {
  return {
    createPolicy: (req, ctx) => createPolicy(deps, req, ctx),
    updatePolicy: (req, ctx) => updatePolicy(deps, req, ctx),
    getPolicy: async (req) => policyView(deps, stored(deps, req.name)),
    listPolicies: async (req) => listPolicies(deps, req),
    deletePolicy: async (req) => {
      const p = stored(deps, req.name);
      // "Its backups stay": the DELETEs its retention queued and no agent ran yet go first (should one
      // fail to go, the call fails with the policy still there, and a retry withdraws the rest).
      withdrawRetentionDeletes(deps, { policy: p.name }, `policy ${p.name} was deleted`);
      deps.catalog.policies.deletePolicy(p.name);
      deps.log.info("policy deleted", { policy: p.name });
      deps.policies?.changed(p.name);
      return {};
    },
    pausePolicy: async (req) => setPaused(deps, req.name, true),
    resumePolicy: async (req) =>
      req.volume ? resumeVolume(deps, req.name, req.volume) : setPaused(deps, req.name, false),
    runPolicyNow: (req) => runPolicyNow(deps, req),
    getVolumeProtection: async (req) => getVolumeProtection(deps, req),
    listVolumeProtection: async (req) => listVolumeProtection(deps, req),
  };
}

/** Volumes a policy selects now: the runner's answer, or its explicit list when no runner is wired. */
export function selectedOf(deps: ApiDeps, p: Policy): VolumeRef[] {
  return deps.policies ? deps.policies.selected(p.name) : (p.selector?.volumes ?? []);
}

/** The public view: the stored policy plus how many volumes it selects now. */
export function policyView(deps: ApiDeps, p: Policy): Policy {
  return { ...p, selectedVolumes: selectedOf(deps, p).length };
}

/** The stored policy of this name; INVALID_ARGUMENT for a malformed name, NOT_FOUND for an unknown one. */
export function stored(deps: ApiDeps, name: string, field = "name"): Policy {
  policyName(name, field);
  const p = deps.catalog.policies.getPolicy(name);
  if (!p) throw notFound(`policy ${name} not found`);
  return p;
}

function context(deps: ApiDeps, name: string): PolicyContext {
  const agents = deps.catalog.listAgents();
  return {
    minIntervalSeconds: deps.policyMinIntervalSeconds ?? DEFAULT_MIN_INTERVAL_SECONDS,
    knownCluster(cluster, field) {
      if (!agents.some((a) => a.clusterName === cluster)) {
        throw notFound(
          `${field}: cluster ${cluster} is unknown (no agent of it has ever registered with this coordinator)`,
        );
      }
    },
    defaultPool: defaultPoolOf(deps.sessions, agents),
    others: deps.catalog.policies.allPolicies().filter((p) => p.name !== name),
    selected: (other) => {
      const o = deps.catalog.policies.getPolicy(other);
      return o ? selectedOf(deps, o) : [];
    },
  };
}

/**
 * NOT_FOUND naming the field when a pool (or namespace) the policy names does not exist, asked of a
 * connected agent of its cluster. A cluster with no agent connected now is not asked: the policy is
 * configuration, and its runs report what they find.
 */
async function probePools(deps: ApiDeps, p: Policy, signal: AbortSignal): Promise<void> {
  const asks: Promise<unknown>[] = [];
  const sel = p.selector;
  if (sel?.cluster && sel.pool && deps.sessions.ofCluster(sel.cluster).length) {
    const q = { pools: [sel.pool], namespaces: [{ pool: sel.pool, namespace: sel.namespace }] };
    asks.push(probe(deps.sessions, sel.cluster, q, signal, "policy.selector"));
  }
  const d = p.destination;
  if (d && deps.sessions.ofCluster(d.cluster).length) {
    const pool = d.pool || deps.sessions.any(d.cluster).info.defaultBackupPool;
    const q = { pools: [pool], namespaces: [{ pool, namespace: d.namespace }] };
    asks.push(probe(deps.sessions, d.cluster, q, signal, "policy.destination"));
  }
  await Promise.all(asks);
}

async function createPolicy(deps: ApiDeps, req: CreatePolicyRequest, ctx: CallContext): Promise<Policy> {
  const name = req.policy?.name ?? "";
  const clean = validatePolicy(req.policy, context(deps, name));
  if (deps.catalog.policies.getPolicy(name)) throw alreadyExists(`policy ${name} already exists`);
  await probePools(deps, clean, ctx.signal);
  const now = new Date();
  const p: Policy = { ...clean, revision: 1, createdAt: now, updatedAt: now };
  try {
    deps.catalog.transaction(() => {
      checkOverlap(p, context(deps, name));
      deps.catalog.policies.insertPolicy(p);
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw alreadyExists(`policy ${name} already exists`);
    throw e;
  }
  deps.log.info("policy created", { policy: name, revision: p.revision });
  deps.policies?.changed(name);
  return policyView(deps, p);
}

async function updatePolicy(deps: ApiDeps, req: UpdatePolicyRequest, ctx: CallContext): Promise<Policy> {
  const name = req.policy?.name ?? "";
  if (req.policy) stored(deps, name, "policy.name");
  const clean = validatePolicy(req.policy, context(deps, name));
  await probePools(deps, clean, ctx.signal);
  // Judged before the transaction: a refusal thrown inside one rolls it back (emptying the catalog's
  // caches), and the runner's selection may write records. Again inside only if the policy changed since.
  let judged = judgeRetentionDrop(deps, stored(deps, name, "policy.name"), clean, req.confirmRetentionDrop);
  const p = deps.catalog.transaction(() => {
    const old = stored(deps, name, "policy.name");
    if (req.expectedRevision && req.expectedRevision !== old.revision) {
      throw new AppError(
        Status.ABORTED,
        `policy ${name} is at revision ${old.revision}, not expected_revision ${req.expectedRevision}: read it again`,
      );
    }
    checkOverlap(clean, context(deps, name));
    const at = new Date();
    const next: Policy = { ...clean, revision: old.revision + 1, createdAt: old.createdAt, updatedAt: at };
    if (old.revision !== judged.revision) judged = judgeRetentionDrop(deps, old, clean, req.confirmRetentionDrop);
    deps.catalog.policies.updatePolicy(next);
    // The records follow a new schedule from now on, in this transaction (records.ts reslot).
    if (!sameSchedule(old, next)) reslot(deps.catalog.policies, next, at.getTime());
    return next;
  });
  if (judged.drop.backups > 0) {
    deps.log.warn("policy updated with a retention that deletes backups it kept (confirm_retention_drop)", {
      policy: name,
      revision: p.revision,
      backups: judged.drop.backups,
      volumes: judged.drop.volumes,
    });
  } else deps.log.info("policy updated", { policy: name, revision: p.revision });
  deps.policies?.changed(name);
  return policyView(deps, p);
}

/**
 * What `update` (validated, as it will be stored) would have retention delete that `old` keeps
 * (../policy/retention-drop.ts); FAILED_PRECONDITION saying so unless `confirmed`. Not computed when
 * nothing that decides retention changed (rules, time zone, destination, selector).
 */
function judgeRetentionDrop(
  deps: ApiDeps,
  old: Policy,
  update: Policy,
  confirmed: boolean,
): { revision: number; drop: RetentionDrop } {
  const next: Policy = { ...update, createdAt: old.createdAt };
  const defaultPool = defaultPoolOf(deps.sessions, deps.catalog.listAgents());
  const none = { revision: old.revision, drop: { backups: 0, volumes: 0 } };
  if (!retentionScopeChanged(old, next, defaultPool)) return none;
  const now = Date.now();
  // A volume's next run: its record's when the schedule stays (a slot kept for a retry, one inside its
  // jitter, an overdue one), else the new schedule's first slot after now (as reslot moves the records).
  // The records read once (one query on PostgreSQL, not one per volume).
  const due = new Map(
    sameSchedule(old, next)
      ? deps.catalog.policies.protectionOfPolicy(old.name).map((r) => [volumeKey(r.volume), r.nextRunAt])
      : [],
  );
  const drop = retentionDrop(deps.catalog, old, next, selectedOf(deps, old), now, defaultPool, due);
  if (drop.backups > 0 && !confirmed) throw failedPrecondition(retentionDropMessage(old.name, drop));
  return { revision: old.revision, drop };
}

function listPolicies(deps: ApiDeps, req: ListPoliciesRequest): ListPoliciesResponse {
  const size = v.pageSize(req.pageSize);
  const page = boundedPage((n) => deps.catalog.policies.listPolicies(n, req.pageToken), size, encodedSize(Policy));
  return { policies: page.items.map((p) => policyView(deps, p)), nextPageToken: page.next };
}

/** Pause or resume; a policy already so is returned unchanged (same revision). */
/** Clears one volume's own pause (a failover's): the runner protects it again from its next slot. */
function resumeVolume(deps: ApiDeps, name: string, volume: VolumeRef): Policy {
  const p = stored(deps, name);
  const key = volumeKey(v.volumeRef(volume, "volume", { lookup: true }));
  const reason = deps.catalog.transaction(() => {
    const rec = deps.catalog.policies.getProtection(p.name, key);
    if (!rec) throw notFound(`policy ${p.name} has no protection record of volume ${key}`);
    if (rec.pausedReason) deps.catalog.policies.upsertProtection({ ...rec, pausedReason: "" });
    return rec.pausedReason;
  });
  deps.log.info("volume protection resumed", { policy: p.name, volume: key, was: reason });
  deps.policies?.changed(p.name);
  return policyView(deps, p);
}

function setPaused(deps: ApiDeps, name: string, paused: boolean): Policy {
  const p = deps.catalog.transaction(() => {
    const old = stored(deps, name);
    if (old.paused === paused) return old;
    const next: Policy = { ...old, paused, revision: old.revision + 1, updatedAt: new Date() };
    deps.catalog.policies.updatePolicy(next);
    return next;
  });
  deps.log.info(paused ? "policy paused" : "policy resumed", { policy: name, revision: p.revision });
  deps.policies?.changed(name);
  return policyView(deps, p);
}

async function runPolicyNow(deps: ApiDeps, req: RunPolicyNowRequest): Promise<RunPolicyNowResponse> {
  const p = stored(deps, req.name);
  let only: VolumeRef | undefined;
  if (req.volume) {
    only = v.volumeRef(req.volume, "volume", { lookup: true });
    const key = volumeKey(only);
    if (!selectedOf(deps, p).some((s) => volumeKey(s) === key)) {
      throw failedPrecondition(`volume ${volumeLabel(only)} is not selected by policy ${p.name}`);
    }
  }
  if (!deps.policies) throw unavailable("the policy runner is not running on this coordinator");
  const { jobIds, skipped } = await deps.policies.runNow(p, only);
  deps.log.info("policy run now", { policy: p.name, jobs: jobIds.length, skipped: skipped.length });
  return { jobIds, skipped };
}
