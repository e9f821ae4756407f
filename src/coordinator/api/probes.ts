/** Questions to an agent while a request is admitted: moved to ../jobs/probes.ts (the runner asks them too). */
export { ask, CALL_TIMEOUT_MS, type ProbeQuestion, probe } from "../jobs/probes";
