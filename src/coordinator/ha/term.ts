/**
 * A term: what dispatches while this coordinator leads — the scheduler, the policy runner, the
 * policy verify runner and the catalog history's pruner (../history.ts) — built fresh from the catalog
 * when the term starts and stopped when it ends.
 * Starting is the restart recovery of a single coordinator: the scheduler reloads the active jobs and
 * gives every running lease one lease time and the reconnect grace for its agent to reconnect (to this coordinator) and claim
 * it (Scheduler.start → lease-broker recover). A single coordinator (SQLite) has one term, from start
 * to stop.
 */

import type { Counter } from "prom-client";
import type { CapabilitySigner } from "../../common/capability";
import type { Logger } from "../../common/log";
import type { Catalog } from "../catalog/catalog";
import type { CoordinatorConfig } from "../config";
import { HistoryPruner } from "../history";
import type { PolicyMetrics } from "../policy/metrics";
import { PolicyRunner } from "../policy/runner";
import { PolicyVerifyRunner } from "../policy/verify-runner";
import { Scheduler } from "../scheduler";
import type { Sessions } from "../sessions";
import { sourceState } from "../volume-presence";

export interface TermDeps {
  catalog: Catalog;
  sessions: Sessions;
  cfg: Pick<CoordinatorConfig, "scheduler" | "policy"> & Partial<Pick<CoordinatorConfig, "catalogHistoryDays">>;
  log: Logger;
  signer?: CapabilitySigner | undefined;
  policyMetrics?: PolicyMetrics;
  /** rbdbackup_catalog_history_removed_total (history.ts), the coordinator's. */
  historyRemoved?: Counter<"table">;
  /** Whether this coordinator still leads, asked before the scheduler's unfenced commands (HaControl.leading). */
  leading?: () => boolean;
}

export class Term {
  readonly scheduler: Scheduler;
  readonly policyRunner: PolicyRunner;
  readonly verifyRunner: PolicyVerifyRunner;
  readonly history: HistoryPruner;
  #stopped = false;

  constructor(deps: TermDeps) {
    const { catalog, sessions, cfg, log } = deps;
    this.scheduler = new Scheduler({
      catalog,
      sessions,
      cfg: cfg.scheduler,
      log,
      signer: deps.signer,
      ...(deps.leading ? { leading: deps.leading } : {}),
    });
    this.policyRunner = new PolicyRunner({
      catalog,
      store: catalog.policies,
      sessions,
      scheduler: this.scheduler,
      log,
      cfg: cfg.policy,
      maxAttempts: cfg.scheduler.maxAttempts,
      ...(deps.policyMetrics ? { metrics: deps.policyMetrics } : {}),
      onChanged: () => this.verifyRunner.soon(),
    });
    this.verifyRunner = new PolicyVerifyRunner({
      catalog,
      store: catalog.policies,
      scheduler: this.scheduler,
      log,
      tickMs: cfg.policy.tickMs,
      maxAttempts: cfg.scheduler.maxAttempts,
    });
    this.history = new HistoryPruner({
      catalog,
      log,
      historyDays: cfg.catalogHistoryDays ?? 0,
      ...(deps.historyRemoved ? { removed: deps.historyRemoved } : {}),
      sourceState: (v, signal) => sourceState(sessions, v, signal, { checkTrash: true }),
    });
    // The runners sleep until something is due; a job's end is an event they act on (a run to settle,
    // retention, a new backup to verify), outside the scheduler's stack.
    let pending = false;
    this.scheduler.on("finished", () => {
      if (pending) return;
      pending = true;
      setImmediate(() => {
        pending = false;
        if (this.#stopped) return;
        this.policyRunner.soon();
        this.verifyRunner.soon();
      });
    });
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  start(): void {
    this.scheduler.start();
    this.policyRunner.start();
    this.verifyRunner.start();
    this.history.start();
  }

  /** Nothing more is dispatched, queued by a policy or verified from now on (idempotent). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.policyRunner.stop();
    this.verifyRunner.stop();
    this.history.stop();
    this.scheduler.stop();
  }
}
