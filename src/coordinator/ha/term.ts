/**
 * A term: what dispatches while this coordinator leads — the scheduler, the policy runner and the
 * policy verify runner — built fresh from the catalog when the term starts and stopped when it ends.
 * Starting is the restart recovery of a single coordinator: the scheduler reloads the active jobs and
 * gives every running lease one lease time and the reconnect grace for its agent to reconnect (to this coordinator) and claim
 * it (Scheduler.start → lease-broker recover). A single coordinator (SQLite) has one term, from start
 * to stop.
 */
import type { CapabilitySigner } from "../../common/capability";
import type { Logger } from "../../common/log";
import type { Catalog } from "../catalog/catalog";
import type { CoordinatorConfig } from "../config";
import type { PolicyMetrics } from "../policy/metrics";
import { PolicyRunner } from "../policy/runner";
import { PolicyVerifyRunner } from "../policy/verify-runner";
import { Scheduler } from "../scheduler";
import type { Sessions } from "../sessions";

export interface TermDeps {
  catalog: Catalog;
  sessions: Sessions;
  cfg: Pick<CoordinatorConfig, "scheduler" | "policy">;
  log: Logger;
  signer?: CapabilitySigner | undefined;
  policyMetrics?: PolicyMetrics;
}

export class Term {
  readonly scheduler: Scheduler;
  readonly policyRunner: PolicyRunner;
  readonly verifyRunner: PolicyVerifyRunner;
  #stopped = false;

  constructor(deps: TermDeps) {
    const { catalog, sessions, cfg, log } = deps;
    this.scheduler = new Scheduler({ catalog, sessions, cfg: cfg.scheduler, log, signer: deps.signer });
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
  }

  /** Nothing more is dispatched, queued by a policy or verified from now on (idempotent). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.policyRunner.stop();
    this.verifyRunner.stop();
    this.scheduler.stop();
  }
}
