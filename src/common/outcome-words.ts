/**
 * Words an agent's error carries that the coordinator acts on. A transfer's destination fails the
 * stream, its source reports the attempt with that message: across those two hops the message is the
 * only carrier, so both sides take the words from here.
 */

/** A restore over the original or a failback failed after writing into the volume (run-sink.ts). */
export const PARTLY_OVERWRITTEN = "was partly overwritten";
