/**
 * Every scenario of the suite, by name, in the order the suite runs them (`--scenarios` picks some).
 * One module per scenario (contract: ./types.ts); raw comes last so it does not warm the clusters first.
 */
import { full } from "./full";
import { scenario as incremental } from "./incremental";
import { latency } from "./latency";
import { scenario as liveWrites } from "./live-writes";
import { memory } from "./memory";
import { raw } from "./raw";
import { restore } from "./restore";
import { small } from "./small";
import { scenario as sparse } from "./sparse";
import type { Scenario } from "./types";
import { wan } from "./wan";

export const scenarios: readonly Scenario[] = [
  full,
  incremental,
  liveWrites,
  sparse,
  small,
  restore,
  latency,
  wan,
  memory,
  raw,
];

export function scenarioByName(name: string): Scenario | undefined {
  return scenarios.find((s) => s.name === name);
}
