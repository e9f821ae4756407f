/**
 * Preloaded into an agent the WAN bench starts (`node --require <this> …/agent/main.js --config …`):
 * appends `--transfer-advertise-address $RBDBACKUP_BENCH_TRANSFER_ADVERTISE` to the agent's flags, so
 * peers reach its data plane through the bench's relay instead of its listening port. (The lab's
 * startAgentProcess has no option for that config key; this keeps the bench out of product code.)
 */
const advertise = process.env.RBDBACKUP_BENCH_TRANSFER_ADVERTISE;
if (advertise) process.argv.push("--transfer-advertise-address", advertise);
