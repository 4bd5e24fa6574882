// Prints the artifact digests of a smoke run folder (runs/smoke), for test/vectors/smoke_digests.json:
//   npx dart run --config configs/smoke.json --override run.runs_dir=DIR <the one-at-a-time overrides of
//   test/pipeline/run.slurm.slow.test.ts>; node scripts/smoke-digests.ts DIR/smoke COMMIT [DIR as it was, if moved]
import { machineFingerprint, runDigests } from "../test/support/RunDigests.ts"

const [dir, commit, madeIn] = process.argv.slice(2)
if (dir === undefined || commit === undefined) {
  console.error("usage: node scripts/smoke-digests.ts RUN_DIR COMMIT")
  process.exit(2)
}
console.log(JSON.stringify({
  made_from: commit,
  // Float-dependent artifacts (RunDigests.ts MACHINE_DEPENDENT) are compared only on a machine with this fingerprint.
  machine: machineFingerprint(),
  command: "dart run --config configs/smoke.json --override inference.concurrency=1 --override teacher.max_concurrency=1 " +
    "--override judge.max_concurrency=1 --override audit.classifier_concurrency=1 --override audit.classifier_batch_size=1",
  digests: runDigests(dir, madeIn)
}, null, 2))
