/** What the BackupService handlers work with: the catalog, the connected agents, the scheduler, a log. */
import type { Logger } from "../../common/log";
import type { CoordinatorStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import type { InterchangeDeps } from "../interchange/run";
import type { PolicyRunnerPort } from "../policy/runner-port";
import type { Scheduler } from "../scheduler";
import type { Sessions } from "../sessions";

/** The part of the scheduler the API uses (a test may pass a stopped Scheduler or a fake). */
export type ApiScheduler = Pick<
  Scheduler,
  "progress" | "kick" | "cancel" | "holdForVerify" | "runningCounts" | "on" | "off"
>;

export interface ApiDeps {
  catalog: Catalog;
  sessions: Sessions;
  scheduler: ApiScheduler;
  log: Logger;
  /** Attempts a new job may make (the scheduler's maxAttempts). */
  maxAttempts: number;
  /**
   * The policy runner (RunPolicyNow, selections, "a policy changed"). Optional until the runner is wired
   * in coordinator.ts: without it a policy selects its explicit volumes and RunPolicyNow is UNAVAILABLE.
   */
  policies?: PolicyRunnerPort;
  /** Shortest interval a policy schedule may have (coordinator setting policy.minIntervalSeconds; default 30). */
  policyMinIntervalSeconds?: number;
  /**
   * The relays of ExportBackup/ImportBackup to the agents' ExportData/ImportData (shared with the session
   * service) and the scheduler's hooks they use; without it both methods are UNAVAILABLE.
   */
  interchange?: InterchangeDeps;
  /** GetCoordinatorStatus (ha/control.ts); without it the coordinator reports itself as the only one. */
  coordinatorStatus?: () => CoordinatorStatus;
}
