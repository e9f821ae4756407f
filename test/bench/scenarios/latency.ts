/** Placeholder: the real latency scenario is built by r5-netbench in its own branch; the lead takes that file when merging. */
import type { Scenario } from "./types";

export const latency: Scenario = {
  name: "latency",
  describe: "full backup with OSD operations delayed, so that concurrency matters",
  run: async () => {
    throw new Error("scenario latency: not built in this branch");
  },
};
