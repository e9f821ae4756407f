/** Placeholder: the real wan scenario is built by r5-netbench in its own branch; the lead takes that file when merging. */
import type { Scenario } from "./types";

export const wan: Scenario = {
  name: "wan",
  describe:
    "agents across a 20 ms RTT, 1 Gbit/s link (network namespaces), with and without compression, and the bandwidth cap",
  needsRoot: true,
  run: async () => {
    throw new Error("scenario wan: not built in this branch");
  },
};
