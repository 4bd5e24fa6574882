import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"

/**
 * Two suites, as two vitest projects over the same files:
 * - `fast` (`npm test`): every test file not listed as slow — pure and loopback tests, run many times a day.
 * - `slow` (`npm run test:slow`): files that need the Docker engine, a container, vLLM for CPU or a full
 *   `dart run`, or that take more than about 20 s on a 2-core machine.
 * A new file is fast by default. Name it `*.slow.test.ts` when it needs Docker, containers or vLLM, or runs long
 * (the SummaryReporter names fast-suite files over 20 s). `test/Suites.test.ts` checks that every test file is in
 * exactly one suite. `npx vitest run FILE` runs one file whichever suite it is in.
 */
/**
 * Slow files that mostly wait (loopback servers, many `dart` processes, a real Python trainer, the Kubernetes
 * control plane's stand-ins): the `slow-loopback` project, run beside the `slow` one by `npm run test:slow`
 * (scripts/test-slow.ts). The `slow` project keeps its files one at a time: they load vLLM and train on the CPU.
 */
function loopbackSlowTests() {
  return [
    // Loopback, but over 20 s each (a real Python trainer, many `dart` processes).
    "test/pipeline/train.test.ts",
    "test/training/HubFetch.test.ts",
    "test/pipeline/teacher.test.ts",
    "test/hardening/teacher.test.ts",
    "test/pipeline/audit.test.ts",
    "test/hardening/audit.test.ts",
    "test/hardening/inputs.test.ts",
    "test/pipeline/infer.test.ts",
    "test/pipeline/ood.test.ts",
    "test/cli/cli.test.ts",
    "test/tracking/mlflow.slow.test.ts",
    // The Slurm cluster's own tests are not here: they run one at a time in the slow project, never while the smoke
    // run on Slurm holds the cluster's GPUs (two one-GPU jobs then wait past their test's deadline).
    // The Kubernetes control plane with kwok nodes and stand-in services.
    "test/compute/KubeLifecycle.slow.test.ts"
  ]
}
export const slowLoopbackTests = loopbackSlowTests()

export const slowTests = [
  "test/**/*.slow.test.ts",
  // Docker engine, containers (the test image, the trainer and vLLM CPU images), full smoke runs.
  "test/pipeline/run.smoke.test.ts",
  "test/pipeline/run.hub.test.ts",
  "test/compute/ComputeCommand.test.ts",
  "test/compute/AuditContainer.test.ts",
  "test/compute/InferContainer.test.ts",
  "test/compute/TrainContainer.test.ts",
  "test/compute/DockerLifecycle.test.ts",
  "test/compute/DockerFailures.test.ts",
  // vLLM for CPU (its server, or its Python environment's argument parser).
  "test/pipeline/auditVllm.test.ts",
  "test/pipeline/infer.vllm.test.ts",
  "test/compute/GpuSpecs.test.ts",
  ...loopbackSlowTests()
]

export const allTests = ["test/**/*.test.ts"]

export default defineConfig({
  test: {
    globalSetup: ["./test/support/TempRoot.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ["default", "./test/support/SummaryReporter.ts"],
    projects: [
      // Two workers even on 2 cores (vitest's default there is 1): fast-suite files mostly wait on the `dart`
      // processes and loopback servers they start (measured on a busy 2-core machine: 201 s with one worker, 158 s with two).
      { extends: true, test: { name: "fast", include: allTests, exclude: slowTests, maxWorkers: Math.max(2, availableParallelism() - 1) } },
      { extends: true, test: { name: "slow", include: slowTests, exclude: slowLoopbackTests } },
      { extends: true, test: { name: "slow-loopback", include: slowLoopbackTests } }
    ]
  }
})
