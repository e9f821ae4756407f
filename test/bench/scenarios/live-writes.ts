/** Placeholder: the real live-writes scenario is built by r4-fixed in its own branch; the lead takes that file when merging. */
import type { Scenario } from "./types";

export const liveWrites: Scenario = {
  name: "live-writes",
  describe: "incremental of a volume while rbd bench writes 4 KiB random I/O to it, next to the idle figure",
  run: async () => {
    throw new Error("scenario live-writes: not built in this branch");
  },
};
