/**
 * Whole-policy validation for CreatePolicy and UpdatePolicy, before anything is written. Every failure
 * names the field: INVALID_ARGUMENT for what is malformed (name, description, selector, destination,
 * backup options, and the schedule and retention through schedule.ts / retention.ts), NOT_FOUND for a
 * cluster no agent ever registered, FAILED_PRECONDITION naming both policies when a volume would be in
 * two policies to the same destination. The checks that need an agent (do the pools exist?) are the
 * API's (api/policies.ts); this file only reads what it is given.
 */
import { setFlagsFromString } from "node:v8";
import { AppError, failedPrecondition, invalidArgument } from "../../common/errors";
import { logger } from "../../common/log";
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy, PolicySelector } from "../../gen/rbdbackup/v1/policy";
import { volumeLabel } from "../model";
import * as v from "../validate";
import { volumeKey } from "./model";
import { validateRetention } from "./retention";
import { validateSchedule } from "./schedule";
import { overlongTemplate } from "./slots";
import { validateVerifySchedule } from "./verify-schedule";

export const POLICY_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const MAX_EXPLICIT_VOLUMES = 1000;
export const MAX_REGEX = 256;
export const MAX_DESCRIPTION = 1024;

/** What validation needs to know of the rest of the coordinator. */
export interface PolicyContext {
  minIntervalSeconds: number;
  /** Throws NOT_FOUND naming `field` when no agent of `cluster` ever registered. */
  knownCluster(cluster: string, field: string): void;
  /** The cluster's default backup pool, as its agents registered it ("" = not known). */
  defaultPool(cluster: string): string;
  /** Every other policy (the one being updated left out). */
  others: Policy[];
  /** Volumes another policy selects now (explicit + discovered). */
  selected(policy: string): VolumeRef[];
}

export function policyName(name: string, field = "name"): string {
  if (!name) throw invalidArgument(`${field} is required`);
  if (!POLICY_NAME_RE.test(name)) {
    throw invalidArgument(
      `${field} "${name.slice(0, 80)}" must be 1-63 characters of [a-z0-9-], starting with a letter or digit`,
    );
  }
  return name;
}

/** Runs a check of ../validate.ts whose messages name bare fields, naming them under "policy.". */
function under<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof AppError && !e.message.startsWith("policy.")) throw new AppError(e.status, `policy.${e.message}`);
    throw e;
  }
}

/** The whole policy, in the order a person would fix it; returns it with the output-only fields cleared. */
export function validatePolicy(p: Policy | undefined, ctx: PolicyContext): Policy {
  if (!p) throw invalidArgument("policy is required");
  policyName(p.name, "policy.name");
  if (p.description.length > MAX_DESCRIPTION) {
    throw invalidArgument(`policy.description is longer than ${MAX_DESCRIPTION} characters`);
  }
  const sel = selector(p.selector);
  const dest = v.location(p.destination, "policy.destination");
  under(() => v.backupMode(p.mode));
  under(() => v.maxSnapshots(p.maxSnapshots));
  under(() => v.volumeMetadata("", p.volumeMetadata));
  const overlong = overlongTemplate(p.volumeMetadata);
  if (overlong) throw invalidArgument(`policy.${overlong}`);
  const transfer = under(() => v.transferOptions(p.transfer, "transfer"));
  if (!p.schedule) throw invalidArgument("policy.schedule is required");
  validateSchedule(p.schedule, ctx.minIntervalSeconds);
  if (!p.retention) throw invalidArgument("policy.retention is required");
  validateRetention(p.retention);
  validateVerifySchedule(p.verify, ctx.minIntervalSeconds);
  ctx.knownCluster(dest.cluster, "policy.destination.cluster");
  if (sel.cluster) ctx.knownCluster(sel.cluster, "policy.selector.cluster");
  const seen = new Set<string>();
  for (const [i, vol] of sel.volumes.entries()) {
    if (seen.has(vol.cluster)) continue;
    seen.add(vol.cluster);
    ctx.knownCluster(vol.cluster, `policy.selector.volumes[${i}].cluster`);
  }
  const clean: Policy = {
    ...p,
    revision: 0,
    createdAt: undefined,
    updatedAt: undefined,
    selectedVolumes: 0,
    transfer,
  };
  checkOverlap(clean, ctx);
  return clean;
}

function selector(s: PolicySelector | undefined): PolicySelector {
  if (!s) throw invalidArgument("policy.selector is required");
  if (s.volumes.length > MAX_EXPLICIT_VOLUMES) {
    throw invalidArgument(
      `policy.selector.volumes has ${s.volumes.length} volumes; at most ${MAX_EXPLICIT_VOLUMES} (select a pool with cluster, pool and image_regex instead)`,
    );
  }
  const keys = new Set<string>();
  for (const [i, vol] of s.volumes.entries()) {
    v.volumeRef(vol, `policy.selector.volumes[${i}]`);
    const k = volumeKey(vol);
    if (keys.has(k)) throw invalidArgument(`policy.selector.volumes[${i}]: ${volumeLabel(vol)} is listed twice`);
    keys.add(k);
  }
  const pooled = !!(s.cluster || s.pool || s.namespace || s.imageRegex);
  if (pooled) {
    if (!s.cluster || !s.pool) {
      throw invalidArgument(
        "policy.selector.cluster and policy.selector.pool go together (a pool is selected by both)",
      );
    }
    v.clusterName(s.cluster, "policy.selector.cluster");
    v.rbdName(s.pool, "policy.selector.pool");
    v.rbdName(s.namespace, "policy.selector.namespace", { allowEmpty: true });
    imageRegex(s.imageRegex);
  }
  if (!pooled && s.volumes.length === 0) {
    throw invalidArgument("policy.selector selects nothing: list volumes, or set cluster and pool (and image_regex)");
  }
  return s;
}

/** Compiled selectors' regexes (overlap checks test many volumes against few expressions). */
const compiled = new Map<string, RegExp>();

// V8's linear-time engine (the "l" flag): a selector's regex runs on the coordinator's one thread against
// every image name of a pool, and a backtracking one like (.|.)*x took 3.2 s on a 26-character name —
// every API call, heartbeat and the leader's lease renewal waiting behind it. In linear time it is
// microseconds whatever the pattern; what cannot run in linear time (backreferences, lookaround) is
// refused when the policy is written. The flag only enables the engine, for regexes that ask for it.
setFlagsFromString("--enable-experimental-regexp-engine");

/**
 * The selector's image_regex, anchored, matched in linear time; INVALID_ARGUMENT when too long, not a
 * regular expression, or not linear-time (backreferences, lookahead, lookbehind).
 */
export function imageRegex(re: string): RegExp {
  const known = compiled.get(re);
  if (known) return known;
  if (re.length > MAX_REGEX) {
    throw invalidArgument(`policy.selector.image_regex is ${re.length} characters long; at most ${MAX_REGEX}`);
  }
  try {
    // Compiled alone first: pasted into the anchors, "a)|(?:b" would compile — unanchored, matching more
    // than the caller wrote (and not a regular expression on its own).
    new RegExp(re, "l");
    const r = new RegExp(`^(?:${re})$`, "l");
    if (compiled.size >= 1000) compiled.clear();
    compiled.set(re, r);
    return r;
  } catch (e) {
    const linear = /linear time/.test((e as Error).message)
      ? " (backreferences and lookaround are not supported: image names are matched in linear time)"
      : "";
    throw invalidArgument(
      `policy.selector.image_regex "${re.slice(0, 80)}" does not compile: ${(e as Error).message}${linear}`,
    );
  }
}

const log = logger({ component: "policy" });

/** Stored regexes already reported as not matchable (one warning each per process). */
const unmatchable = new Set<string>();

/**
 * Whether an image name matches a stored selector's regex. A regex written before they were matched in
 * linear time may not compile now (a backreference): it matches nothing, with one warning — one policy
 * then protects no discovered volume until it is fixed, instead of every policy's pass failing on it.
 */
export function regexMatches(re: string, image: string): boolean {
  if (unmatchable.has(re)) return false; // not compiled again for every image name
  let r: RegExp;
  try {
    r = imageRegex(re);
  } catch (e) {
    if (!unmatchable.has(re)) {
      unmatchable.add(re);
      log.warn("a policy's image_regex cannot be matched in linear time: it matches no image until fixed", {
        imageRegex: re.slice(0, 80),
        err: e,
      });
    }
    return false;
  }
  return r.test(image);
}

/** Whether `p`'s selector takes `vol`: listed, or in its pool and matched by its regex (whatever a listing said). */
export function selects(p: Policy, vol: VolumeRef): boolean {
  const sel = p.selector;
  if (!sel) return false;
  const key = volumeKey(vol);
  return sel.volumes.some((v) => volumeKey(v) === key) || poolMatches(sel, vol);
}

/** Whether the selector's pool part (cluster + pool + namespace + regex) takes this volume. */
function poolMatches(s: PolicySelector, vol: VolumeRef): boolean {
  if (!s.cluster || !s.pool) return false;
  if (vol.cluster !== s.cluster || vol.pool !== s.pool || vol.namespace !== s.namespace) return false;
  // No regex: every image of the pool (as discovery takes it), not only an image named "".
  return !s.imageRegex || regexMatches(s.imageRegex, vol.image);
}

/**
 * A destination as one string, its pool "" (the cluster's default backup pool) written out, so that
 * "" and the default pool's name are one destination (validation and the runner's discovery alike).
 */
export const destinationKey = (d: BackupLocation | undefined, defaultPool: (cluster: string) => string): string =>
  d ? `${d.cluster}/${d.pool || defaultPool(d.cluster)}/${d.namespace}` : "";

const destKey = (d: BackupLocation | undefined, ctx: PolicyContext): string => destinationKey(d, ctx.defaultPool);

/**
 * FAILED_PRECONDITION when a volume the policy selects is already in another policy to the same
 * destination: an explicit volume of either in the other's selection, two selectors of one pool that
 * cannot be told apart (one without regex, or the same regex), or a volume the other selects now
 * (discovered) that this selector takes.
 */
export function checkOverlap(p: Policy, ctx: PolicyContext): void {
  const mine = destKey(p.destination, ctx);
  const sel = p.selector as PolicySelector;
  for (const o of ctx.others) {
    if (o.name === p.name || destKey(o.destination, ctx) !== mine || !o.selector) continue;
    const theirs = o.selector;
    const clash = (what: string) =>
      failedPrecondition(
        `policy.selector: ${what} is in both policy "${p.name}" and policy "${o.name}", to the same destination ${mine}; a volume may be in one policy per destination`,
      );
    const theirExplicit = new Set(theirs.volumes.map(volumeKey));
    for (const vol of sel.volumes) {
      if (theirExplicit.has(volumeKey(vol)) || poolMatches(theirs, vol)) throw clash(`volume ${volumeLabel(vol)}`);
    }
    for (const vol of theirs.volumes) if (poolMatches(sel, vol)) throw clash(`volume ${volumeLabel(vol)}`);
    const samePool =
      sel.cluster &&
      sel.pool &&
      sel.cluster === theirs.cluster &&
      sel.pool === theirs.pool &&
      sel.namespace === theirs.namespace;
    if (samePool && (!sel.imageRegex || !theirs.imageRegex || sel.imageRegex === theirs.imageRegex)) {
      throw clash(`pool ${sel.cluster}/${sel.pool}${sel.namespace ? `/${sel.namespace}` : ""}`);
    }
    if (samePool) {
      for (const vol of ctx.selected(o.name)) if (poolMatches(sel, vol)) throw clash(`volume ${volumeLabel(vol)}`);
    }
  }
}
