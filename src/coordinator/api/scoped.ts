/**
 * The scope guard of the BackupService (../scopes.ts says what a scope is): a middleware between the
 * audit and the handlers that, for a scoped caller, checks what each request names before its handler
 * runs — the volumes it backs up, restores into, fails over or back; the backups, jobs and policies it
 * names by id — and filters what the listings answer. Anything outside the caller's scopes is
 * PERMISSION_DENIED (reason `out_of_scope`, counted; a read is audited here, a mutating call by the
 * audit middleware with its status), nothing changed. A request that names something malformed or
 * unknown passes to its handler, which answers INVALID_ARGUMENT or NOT_FOUND as for anyone. Unscoped
 * callers (no scopes file, admins, `*`) pass untouched — but for ADMIN_UNLESS_SCOPED (ImportBackup),
 * which an unscoped operator may not call (PERMISSION_DENIED, reason wrong_role). Every BackupService method is in CHECKS: a new
 * one must be placed there on purpose (the guard refuses a scoped caller's call to a method it lacks).
 */
import { type CallContext, ServerError, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import { failedPrecondition, notFound } from "../../common/errors";
import { isBaseImage } from "../../common/ids";
import {
  Backup,
  type CheckClusterRequest,
  type CreateBackupRequest,
  type FailbackVolumeRequest,
  type FailoverVolumeRequest,
  type FailoverVolumeResponse,
  type FlattenVolumeRequest,
  type ImportBackupHeader,
  Job,
  type ListAgentsResponse,
  type ListBackupsResponse,
  type ListJobsResponse,
  type RestoreBackupRequest,
} from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import {
  type GetVolumeProtectionRequest,
  type ListPoliciesResponse,
  type ListVolumeProtectionResponse,
  Policy,
  VolumeProtection,
} from "../../gen/rbdbackup/v1/policy";
import type { Audit } from "../audit";
import { BACKUP_SERVICE, callerName, callerOf, MUTATING, type RefusalReason, roleOf } from "../authz";
import { volumeKey } from "../model";
import type { Scope, ScopeStore } from "../scopes";
import type { ApiDeps } from "./deps";
import { backupOfClone } from "./flatten";
import { encodedSize, itemsThatFit } from "./paging";

// biome-ignore lint/suspicious/noExplicitAny: requests and responses of every method pass through
type Msg = any;

class OutOfScope extends Error {}

interface Guard {
  scope: Scope;
  deps: ApiDeps;
  /** Throws OutOfScope naming what is outside. */
  need(ok: boolean, what: string): void;
  volume(v: VolumeRef | undefined, field: string): void;
  location(l: BackupLocation | undefined, field: string): void;
  backupId(id: string | undefined, field: string): void;
  jobId(id: string | undefined): void;
  policyName(name: string | undefined): void;
  /** A stored policy of this name the client may see (false for an unknown name). */
  seesPolicyNamed(name: string): boolean;
  /** A scoped client names its policy's destination pool (a default is resolved again at every run). */
  explicitDestination(p: Policy): void;
  seesBackup(b: Backup | undefined): boolean;
  seesJob(j: Pick<Job, "volume" | "backupId">): boolean;
  seesPolicy(p: Policy): boolean;
}

/**
 * What each method's request must keep in scope (before: it throws OutOfScope, or returns the request
 * as the handler gets it), and how its answer is filtered (after). A paged listing names its items'
 * field: its pages are read on until one is full or the listing ends, so that neither a short page nor
 * a token tells how many of another's items were skipped.
 */
type Check = {
  before?: (g: Guard, req: Msg) => Msg;
  after?: (g: Guard, res: Msg) => Msg;
  /** A listing: the field of its items, and an item's encoded size (its pages are bounded by bytes too). */
  paged?: string;
  itemBytes?: (item: never) => number;
  /** A client-streaming call whose first message is its header: what that header must keep in scope. */
  header?: (g: Guard, header: Msg) => void;
};

/**
 * Methods an operator may call only while its scopes confine it (they need the admin role otherwise):
 * ImportBackup makes the caller's bytes a backup of the volume its header names — of one of the
 * client's own volumes, kept where it keeps backups, when scoped (a Cinder driver's copy of a volume
 * that is not RBD); of any volume when not.
 */
export const ADMIN_UNLESS_SCOPED: ReadonlySet<string> = new Set(["ImportBackup"]);

/** Rows a scoped listing call reads at most (its page then ends where it got to, with a token). */
export const SCOPED_LIST_MAX_ROWS = 5_000;

const byBackup = (field = "backup_id"): Check => ({ before: (g, r) => g.backupId(r.backupId, field) });
const byJob: Check = { before: (g, r) => g.jobId(r.jobId) };
const byPolicy: Check = {
  before: (g, r) => {
    g.policyName(r.name);
    if (r.volume) g.volume(r.volume, "volume");
  },
};

export const CHECKS: Readonly<Record<string, Check>> = {
  CreateBackup: {
    before: (g, r: CreateBackupRequest) => {
      g.volume(r.volume, "volume");
      g.location(r.location, "location");
    },
  },
  RestoreBackup: {
    before: (g, r: RestoreBackupRequest) => {
      g.backupId(r.backupId, "backup_id");
      g.volume(r.target, "target");
    },
  },
  DeleteBackup: byBackup(),
  GetBackup: byBackup(),
  ListBackups: {
    after: (g, res: ListBackupsResponse) => ({ ...res, backups: res.backups.filter((b) => g.seesBackup(b)) }),
    paged: "backups",
    itemBytes: encodedSize(Backup),
  },
  ListBackupSnapshots: { before: (g, r) => g.volume(r.volume, "volume") },
  VerifyBackup: byBackup(),
  ExportBackup: {
    before: (g, r) => {
      g.backupId(r.backupId, "backup_id");
      if (r.fromBackupId) g.backupId(r.fromBackupId, "from_backup_id");
    },
  },
  ExportBackupRecord: byBackup(),
  GetJob: byJob,
  WatchJob: byJob,
  CancelJob: byJob,
  ListJobs: {
    before: (g, r) => {
      if (r.backupId) g.backupId(r.backupId, "backup_id");
    },
    after: (g, res: ListJobsResponse) => ({ ...res, jobs: res.jobs.filter((j) => g.seesJob(j)) }),
    paged: "jobs",
    itemBytes: encodedSize(Job),
  },
  ListAgents: {
    after: (g, res: ListAgentsResponse) => ({
      ...res,
      agents: res.agents.filter((a) => g.scope.touches(a.clusterName)),
    }),
  },
  CheckCluster: {
    before: (g, r: CheckClusterRequest) => {
      if (!r.cluster) return;
      g.need(g.scope.touches(r.cluster), `cluster ${r.cluster}`);
      // The backup pool is judged when named, or (the default one) when the client keeps backups there.
      if (r.backupPool || g.scope.keepsOn(r.cluster))
        g.location({ cluster: r.cluster, pool: r.backupPool, namespace: "" }, "backup_pool");
    },
  },
  FailoverVolume: {
    before: (g, r: FailoverVolumeRequest) => {
      g.volume(r.volume, "volume");
      if (r.location) g.location(r.location, "location");
      if (r.target) g.volume({ ...r.target, cluster: r.target.cluster || (r.location?.cluster ?? "") }, "target");
    },
    // It pauses every policy protecting the volume; the client is told only of its own.
    after: (g, res: FailoverVolumeResponse) => ({
      ...res,
      pausedPolicies: res.pausedPolicies.filter((n) => g.seesPolicyNamed(n)),
    }),
  },
  FailbackVolume: {
    before: (g, r: FailbackVolumeRequest) => {
      g.volume(r.volume, "volume");
      g.volume(r.source, "source");
      if (r.backupId) g.backupId(r.backupId, "backup_id");
    },
  },
  FlattenVolume: {
    before: (g, r: FlattenVolumeRequest) => {
      g.volume(r.volume, "volume");
      if (r.backupId) g.backupId(r.backupId, "backup_id");
      else if (r.volume?.cluster) {
        // The backup the handler would choose: the one listing the volume among its clones.
        const b = backupOfClone(g.deps.catalog, r.volume);
        if (b) g.need(g.seesBackup(b), `backup ${b.id} (a backup of ${label(b.volume ?? { cluster: "?" })})`);
      }
    },
  },
  CreatePolicy: {
    before: (g, r) => {
      if (!r.policy) return;
      g.explicitDestination(r.policy);
      g.need(g.seesPolicy(r.policy), `policy ${r.policy.name}`);
    },
  },
  UpdatePolicy: {
    before: (g, r) => {
      g.policyName(r.policy?.name);
      if (!r.policy) return;
      g.explicitDestination(r.policy);
      g.need(g.seesPolicy(r.policy), `policy ${r.policy.name} as updated`);
    },
  },
  GetPolicy: byPolicy,
  DeletePolicy: byPolicy,
  PausePolicy: byPolicy,
  ResumePolicy: byPolicy,
  RunPolicyNow: byPolicy,
  ListPolicies: {
    after: (g, res: ListPoliciesResponse) => ({ ...res, policies: res.policies.filter((p) => g.seesPolicy(p)) }),
    paged: "policies",
    itemBytes: encodedSize(Policy),
  },
  GetVolumeProtection: {
    before: (g, r: GetVolumeProtectionRequest) => {
      g.volume(r.volume, "volume");
      if (r.policy || !r.volume?.cluster) {
        if (r.policy) g.policyName(r.policy);
        return;
      }
      // Without a policy named, the handler would pick among every policy's record of the volume (and
      // name them all when there are several): the client's own are its choice.
      const own = g.deps.catalog.policies
        .protectionOfVolume(volumeKey(r.volume))
        .map((rec) => rec.policy)
        .filter((name) => g.seesPolicyNamed(name));
      if (own.length === 0) throw notFound(`volume ${label(r.volume)} is not protected by any policy`);
      if (own.length > 1)
        throw failedPrecondition(
          `volume ${label(r.volume)} is in ${own.length} policies (${own.join(", ")}): name one with policy`,
        );
      return { ...r, policy: own[0] };
    },
  },
  ListVolumeProtection: {
    before: (g, r) => {
      if (r.policy) g.policyName(r.policy);
    },
    after: (g, res: ListVolumeProtectionResponse) => ({
      ...res,
      volumes: res.volumes.filter((v) => g.scope.sees(v.volume) && g.seesPolicyNamed(v.policy)),
    }),
    paged: "volumes",
    itemBytes: encodedSize(VolumeProtection),
  },
  GetCoordinatorStatus: {},
  // A scoped operator's import (ADMIN_UNLESS_SCOPED): of its own volume, kept where it keeps backups.
  ImportBackup: {
    header: (g, h: ImportBackupHeader) => {
      g.volume(h.volume, "header.volume");
      g.location(h.location, "header.location");
      if (h.parentBackupId) g.backupId(h.parentBackupId, "header.parent_backup_id");
    },
  },
  // Admins only, and admins are never scoped: reached by no scoped caller (the guard refuses it if one did).
  ForgetAgent: { before: (g) => g.need(false, "an admin's call") },
  ImportBackupRecord: { before: (g) => g.need(false, "an admin's call") },
  RebuildCatalog: { before: (g) => g.need(false, "an admin's call") },
};

const label = (v: { cluster: string; pool?: string; namespace?: string; image?: string }) =>
  [v.cluster, v.pool, v.namespace, v.image].filter((x) => x).join("/");

function guardOf(deps: ApiDeps, scope: Scope): Guard {
  const catalog = deps.catalog;
  // Read only when a location's default pool is judged (most calls judge none): not at every call.
  let agents: ReturnType<typeof catalog.listAgents> | undefined;
  /**
   * A location's pool left empty is its cluster's default backup pool — the one agent the handler picks
   * answers it: judged only when every agent of the cluster (connected or on record) names the same one,
   * else "" (the client must name the pool).
   */
  const defaultPool = (cluster: string): string => {
    agents ??= catalog.listAgents();
    const named = new Set([
      ...deps.sessions.ofCluster(cluster).map((s) => s.info.defaultBackupPool),
      ...agents.filter((a) => a.clusterName === cluster).map((a) => a.defaultBackupPool),
    ]);
    return named.size === 1 ? ([...named][0] as string) : "";
  };
  const policies = new Map<string, boolean>();
  const g: Guard = {
    scope,
    deps,
    need(ok, what) {
      if (!ok) throw new OutOfScope(`${what} is outside the scopes of ${scope.describe()}`);
    },
    volume(v, field) {
      if (!v?.cluster) return; // the handler refuses what is missing
      g.need(scope.sees(v), `${field} ${label(v)}`);
      // A base image is nobody's volume, even in a pool a volume scope covers (its chain is its backups').
      g.need(!isBaseImage(v.image), `${field} ${label(v)} (a backup's base image)`);
    },
    location(l, field) {
      if (!l?.cluster) return;
      const pool = l.pool || defaultPool(l.cluster);
      if (!pool)
        g.need(false, `${field} ${l.cluster} (its agents do not agree on a default backup pool: name the pool)`);
      g.need(scope.keeps({ ...l, pool }), `${field} ${label({ ...l, pool })}`);
    },
    backupId(id, field) {
      const b = id ? catalog.getBackup(id) : undefined;
      if (b) g.need(g.seesBackup(b), `${field} ${id} (a backup of ${label(b.volume ?? { cluster: "?" })})`);
    },
    jobId(id) {
      const j = id ? catalog.getJob(id) : undefined;
      if (j) g.need(g.seesJob(j), `job ${id} (of ${label(j.volume)})`);
    },
    policyName(name) {
      const p = name ? catalog.policies.getPolicy(name) : undefined;
      if (p) g.need(g.seesPolicy(p), `policy ${name}`);
    },
    explicitDestination(p) {
      if (p.destination?.cluster && !p.destination.pool)
        g.need(
          false,
          `policy ${p.name}'s destination ${p.destination.cluster} without a pool (a scoped client names its backup pool: a default would be resolved again at every run)`,
        );
    },
    seesPolicyNamed(name) {
      let seen = policies.get(name);
      if (seen === undefined) {
        const p = catalog.policies.getPolicy(name);
        seen = !!p && g.seesPolicy(p);
        policies.set(name, seen);
      }
      return seen;
    },
    seesBackup: (b) => !!b && scope.sees(b.volume),
    seesJob(j) {
      if (j.volume && !scope.sees(j.volume)) return false;
      if (!j.backupId) return !!j.volume;
      const b = catalog.getBackup(j.backupId);
      return b ? g.seesBackup(b) : !!j.volume;
    },
    seesPolicy(p) {
      const s = p.selector;
      if (!s) return false;
      if (!s.volumes.every((v) => scope.sees(v))) return false;
      if (s.cluster && !scope.covers("volumes", s.cluster, s.pool || undefined, s.pool ? s.namespace : undefined))
        return false;
      const d = p.destination;
      if (!d?.cluster) return false;
      const pool = d.pool || defaultPool(d.cluster);
      return !!pool && scope.keeps({ ...d, pool });
    },
  };
  return g;
}

/** The request stream with `check` run on its first message's header before the handler gets it. */
async function* headerChecked(requests: AsyncIterable<Msg>, check: (header: Msg) => void): AsyncGenerator<Msg> {
  let first = true;
  for await (const m of requests) {
    if (first && m?.body?.$case === "header") check(m.body.value);
    first = false;
    yield m;
  }
}

export interface ScopeGuardDeps extends ApiDeps {
  scopes: ScopeStore;
  audit?: Audit;
}

export function scopeGuard(deps: ScopeGuardDeps) {
  return async function* scopeMiddleware<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    const method = call.method.path.split("/").pop() ?? "";
    const caller = callerOf(context.metadata);
    const verdict = deps.scopes.of(caller);
    const refuse = (message: string, reason: RefusalReason = "out_of_scope"): never => {
      if (deps.audit) {
        // A mutating call's line is the audit middleware's (with this status); a read's is written here.
        if (MUTATING.has(method)) deps.audit.refusals.labels(BACKUP_SERVICE, reason).inc();
        else
          deps.audit.refused(BACKUP_SERVICE, {
            identity: callerName(caller),
            method: call.method.path,
            target: "",
            result: "PERMISSION_DENIED",
            reason,
            message,
          });
      }
      throw new ServerError(Status.PERMISSION_DENIED, message);
    };
    if ("scope" in verdict && verdict.scope === null) {
      if (ADMIN_UNLESS_SCOPED.has(method) && roleOf(caller) === "operator")
        return refuse(
          `${method} needs role admin, or an operator whose scopes (auth.scopesFile) confine it to its own volumes and backup pools; ${callerName(caller)} is an operator without scopes`,
          "wrong_role",
        );
      return yield* call.next(call.request, context);
    }
    if ("refused" in verdict) return refuse(verdict.refused);
    const check = CHECKS[method];
    if (!check) return refuse(`${method}: no scope check is defined for it, and the caller is scoped`);
    const g = guardOf(deps, verdict.scope as Scope);
    let req = call.request;
    try {
      req = (check.before?.(g, req) as Req | undefined) ?? req;
    } catch (e) {
      if (e instanceof OutOfScope) return refuse(e.message);
      throw e;
    }
    const header = check.header;
    if (header)
      // Judged as the handler reads the header (within its own deadline for it): a refusal is its answer.
      req = headerChecked(req as AsyncIterable<Msg>, (h) => {
        try {
          header(g, h);
        } catch (e) {
          if (e instanceof OutOfScope) refuse(e.message);
          throw e;
        }
      }) as Req;
    const after = (res: Res): Res => {
      try {
        return check.after ? (check.after(g, res) as Res) : res;
      } catch (e) {
        if (e instanceof OutOfScope) return refuse(e.message);
        throw e;
      }
    };
    const field = check.paged;
    if (!field) return after((yield* call.next(req, context)) as Res);
    // A paged listing: pages read on (each asking for what is still missing) until one is full, its
    // items pass PAGE_BYTES (paging.ts: a default client takes 4 MiB), the listing ends, or
    // SCOPED_LIST_MAX_ROWS were read.
    const asked = req as Msg;
    const size: number = asked.pageSize || 100;
    const bytesOf = (check.itemBytes ?? (() => 0)) as (item: unknown) => number;
    const items: unknown[] = [];
    let token: string = asked.pageToken;
    let rows = 0;
    let bytes = 0;
    const page = (pageSize: number) =>
      call.next({ ...asked, pageSize, pageToken: token } as Req, context) as AsyncGenerator<Res, Res | undefined>;
    for (;;) {
      // Each page is a synchronous catalog read: the event loop gets a turn between them (heartbeats,
      // lease renewals), and a caller that left stops the reading.
      if (rows > 0) await new Promise((r) => setImmediate(r));
      if (context.signal.aborted) throw new ServerError(Status.CANCELLED, "the listing's caller went away");
      let res = (yield* page(Math.max(1, size - items.length))) as Msg;
      let kept = (after(res) as Msg)[field] as unknown[];
      // The first kept item that would pass the byte budget (never the page's very first item).
      const fit = itemsThatFit(kept, bytesOf, bytes, items.length === 0);
      const cut = fit.count;
      if (cut < kept.length) {
        // The page ends before that item: the rows read up to it are asked again, so the token the
        // answer carries goes on right there (the after filter keeps its items as they are).
        const upTo = (res[field] as unknown[]).indexOf(kept[cut]);
        if (upTo === 0) return { ...res, [field]: items, nextPageToken: token } as Res;
        res = (yield* page(upTo)) as Msg;
        kept = (after(res) as Msg)[field] as unknown[];
        items.push(...kept);
        return { ...res, [field]: items, nextPageToken: res.nextPageToken } as Res;
      }
      bytes += fit.bytes;
      rows += res[field].length;
      items.push(...kept);
      token = res.nextPageToken;
      if (!token || items.length >= size || rows >= SCOPED_LIST_MAX_ROWS)
        return { ...res, [field]: items, nextPageToken: token } as Res;
    }
  };
}
