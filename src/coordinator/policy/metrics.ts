/**
 * The policy runner's metrics. Counters are counted as things happen; the per-volume gauges (recovery
 * point age, volumes by state) are computed at scrape time from the runner's view. They register into
 * the coordinator's registry (CoordinatorMetrics' `extra`). The samples are computed once per scrape (kept
 * for a second), not once per gauge.
 */

import client from "prom-client";
import { SeriesGauge } from "../../common/series-gauge";
import { ProtectionState } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import type { PolicyStore } from "../catalog/policy-store";
import { type CollectErrors, collectErrorsCounter } from "../metric-guard";
import type { DiscoveryAge } from "./discovery";
import { recoveryPoint, registeredDefaultPool } from "./recovery-point";
import { stateOf } from "./status";

/** ProtectionState → its label value: lowercase without the prefix ("ok", "late", …). */
const STATE_LABEL: Record<number, string> = Object.fromEntries(
  Object.entries(ProtectionState)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v, k.replace("PROTECTION_STATE_", "").toLowerCase()]),
);

/** The gauges computed from the per-volume samples (a failed computation counts for both). */
const SAMPLED = ["rbdbackup_volume_recovery_point_age_seconds", "rbdbackup_volumes_protected"];
/** VolumeSample.state's values: every ProtectionState but UNSPECIFIED (and UNRECOGNIZED), from the enum. */
const PROTECTION_STATES = Object.values(STATE_LABEL).filter((l) => l !== "unspecified" && l !== "unrecognized");

/** How long one computation of the per-volume samples serves collects (the gauges of one scrape). */
const SAMPLES_TTL_MS = 1_000;

export interface VolumeSample {
  cluster: string;
  pool: string;
  namespace: string;
  image: string;
  policy: string;
  /** Seconds since the newest available backup's snapshot (undefined: no backup yet). */
  ageSeconds: number | undefined;
  /** ProtectionState name, lowercase without prefix: ok, late, failing, paused, pending. */
  state: string;
}

export class PolicyMetrics {
  readonly missedRuns: client.Counter<"policy">;
  readonly retentionDeletions = new client.Counter({
    name: "rbdbackup_policy_retention_deletions_total",
    help: "Backups a policy's retention queued for deletion (DELETE jobs), by policy.",
    labelNames: ["policy"],
    registers: [],
  });
  readonly runDuration = new client.Histogram({
    name: "rbdbackup_policy_run_duration_seconds",
    help: "Scheduled or RunPolicyNow backups of a policy: from queued to finished, seconds, by policy and result.",
    labelNames: ["policy", "result"],
    buckets: [5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400],
    registers: [],
  });
  readonly recoveryPointAge: SeriesGauge<"cluster" | "pool" | "namespace" | "image" | "policy">;
  readonly volumesProtected: client.Gauge;
  readonly discoveryAge: client.Gauge;

  readonly #known = new Set<string>();

  /**
   * A policy the runner sees: its counters exist at 0 (a series born at 60 — a day of missed slots after
   * downtime — reads as no increase to an alert); known ones are not touched again.
   */
  know(policy: string): void {
    if (this.#known.has(policy)) return;
    this.#known.add(policy);
    this.missedRuns.labels(policy).inc(0);
    this.retentionDeletions.labels(policy).inc(0);
  }

  /** A deleted policy's series go (they would stay until the coordinator restarts). */
  forget(policy: string): void {
    this.#known.delete(policy);
    this.missedRuns.remove(policy);
    this.retentionDeletions.remove(policy);
    for (const result of ["succeeded", "failed"]) this.runDuration.remove(policy, result);
  }

  constructor(
    sampleNow: () => VolumeSample[],
    /** Where a failed catalog read is counted (metric-guard.ts; the coordinator's shared counter). */
    errors: CollectErrors = collectErrorsCounter(),
    /**
     * Every stored policy's name, asked at each scrape: their counters exist at 0 on every coordinator,
     * standbys too — after a failover the new leader adds the missed slots to a series Prometheus already
     * has (a series born with them reads as no increase), and a deleted policy's go.
     */
    policyNames?: () => string[],
    /** The leader's discovered pools and how long ago each was listed (none on a standby). */
    discoveryAges: () => DiscoveryAge[] = () => [],
  ) {
    const self = this;
    this.discoveryAge = new client.Gauge({
      name: "rbdbackup_policy_discovery_age_seconds",
      help: "Seconds since the pool a policy's selector discovers volumes in was last listed (since the first try, while never listed): a listing that keeps failing leaves the images created since unprotected, and their volumes have no protection record to turn LATE. Reported by the leader.",
      labelNames: ["cluster", "pool", "namespace"],
      registers: [],
      collect() {
        this.reset();
        for (const a of discoveryAges()) this.labels(a.cluster, a.pool, a.namespace).set(a.ageSeconds);
      },
    });
    this.missedRuns = new client.Counter({
      name: "rbdbackup_policy_missed_runs_total",
      help: "Volume runs that did not happen, one per selected volume per slot that passed without its run (coordinator down, window closed, previous run still going), by policy.",
      labelNames: ["policy"],
      registers: [],
      collect() {
        if (!policyNames) return;
        let names: string[];
        try {
          names = policyNames();
        } catch {
          errors.labels("rbdbackup_policy_missed_runs_total").inc(); // the series stay as they are
          return;
        }
        const now = new Set(names);
        for (const p of names) self.know(p);
        for (const p of [...self.#known]) if (!now.has(p)) self.forget(p);
      },
    });
    for (const name of SAMPLED) errors.labels(name).inc(0);
    if (policyNames) errors.labels("rbdbackup_policy_missed_runs_total").inc(0);
    // Both gauges of one scrape share one computation (it reads every protected volume's backups). A
    // catalog read that fails leaves both without series for the scrape (counted), not a failed scrape.
    let memo: { at: number; samples: VolumeSample[] } | undefined;
    const samples = (): VolumeSample[] => {
      const now = Date.now();
      if (!memo || now - memo.at >= SAMPLES_TTL_MS || now < memo.at) {
        let computed: VolumeSample[] = [];
        try {
          computed = sampleNow();
        } catch {
          for (const name of SAMPLED) errors.labels(name).inc();
        }
        memo = { at: now, samples: computed };
      }
      return memo.samples;
    };
    this.recoveryPointAge = new SeriesGauge(
      {
        name: "rbdbackup_volume_recovery_point_age_seconds",
        help: "Seconds since the newest available backup at the policy's destination of a volume it protects was made (its created_at: when its snapshot was taken, or an import's taken_at; absent until its first backup).",
        labelNames: ["cluster", "pool", "namespace", "image", "policy"],
      },
      function* () {
        for (const s of samples()) {
          if (s.ageSeconds === undefined) continue;
          const labels = { cluster: s.cluster, pool: s.pool, namespace: s.namespace, image: s.image, policy: s.policy };
          yield { labels, value: s.ageSeconds };
        }
      },
    );
    this.volumesProtected = new client.Gauge({
      name: "rbdbackup_volumes_protected",
      help: "Volumes policies select, by policy and protection state (ok, late, failing, paused, pending).",
      labelNames: ["policy", "state"],
      registers: [],
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        const policies = new Set<string>();
        for (const s of samples()) {
          const k = `${s.policy}\0${s.state}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
          policies.add(s.policy);
        }
        // Every state of a policy with volumes, 0 where none is in it: a state that empties reads 0 at
        // once (the alerts look back 2 min for the last sample, to bridge a failover's gap between
        // leaders: a series that vanished instead would keep its last count that long).
        for (const policy of policies) for (const state of PROTECTION_STATES) this.labels(policy, state).set(0);
        for (const [k, n] of counts) {
          const [policy = "", state = ""] = k.split("\0");
          this.labels(policy, state).set(n);
        }
      },
    });
  }

  all(): client.Metric[] {
    return [
      this.missedRuns,
      this.retentionDeletions,
      this.runDuration,
      this.recoveryPointAge,
      this.volumesProtected,
      this.discoveryAge,
    ];
  }
}

/** Every protection record's sample at `now`: its newest backup's age and its state. */
export function volumeSamples(catalog: Catalog, store: PolicyStore, now: number): VolumeSample[] {
  const out: VolumeSample[] = [];
  const defaultPool = registeredDefaultPool(catalog);
  for (const p of store.allPolicies()) {
    for (const rec of store.protectionOfPolicy(p.name)) {
      const newest = recoveryPoint(catalog, p, rec.volume, defaultPool);
      const at = newest?.at;
      const v = rec.volume;
      out.push({
        cluster: v.cluster,
        pool: v.pool,
        namespace: v.namespace,
        image: v.image,
        policy: p.name,
        ageSeconds: at === undefined ? undefined : Math.max(0, (now - at) / 1000),
        state: STATE_LABEL[stateOf(p, rec, newest, now, p.paused || rec.pausedReason !== "")] ?? "unknown",
      });
    }
  }
  return out;
}
