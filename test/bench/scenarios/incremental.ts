/** Placeholder: the real incremental scenario is built by r4-fixed in its own branch; the lead takes that file when merging. */
import type { Scenario } from "./types";

export const incremental: Scenario = {
  name: "incremental",
  describe: "incremental of ~2% of the image in 64 KiB extents, end to end through the API",
  run: async () => {
    throw new Error("scenario incremental: not built in this branch");
  },
};
