import { afterAll, describe, expect, it } from "@effect/vitest"
import { KubeConfig } from "@kubernetes/client-node"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { experimentSelector } from "../../src/compute/kubernetes/KubeObjects.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { freePort, freePortRun } from "../support/FreePort.ts"
import { ensureKube, haveKubeCluster, listObjects, NAMESPACE } from "../support/KubeCluster.ts"
import { kwokKubelet } from "../support/KwokKubelet.ts"

// The smoke profile with `compute.backend: "kubernetes"` on the real control plane (scripts/setup-kubernetes.sh): two
// vLLM replicas, the two classifiers, the trainer and the tasks (tiny models, chat-template probe) are pods that the
// scheduler places on the kwok GPU nodes. kwok runs no containers, so a stand-in kubelet (test/support/KwokKubelet.ts)
// runs each pod's image here in Docker, as the pod says, and points kwok's forwards, exec and logs at it: dart reaches
// the real vLLM servers and trainer only through the API (a port-forward per pod, adapters copied by exec + tar, logs).
// The pods ask for no GPU: test/compute/KubeLifecycle.slow.test.ts, which may run at the same time, shows the GPU
// scheduling and needs all four.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-kube-run-"))
afterAll(() => (process.env.DART_KEEP_SCRATCH === "1" ? console.log(`kept ${scratch}`) : rmSync(scratch, { recursive: true, force: true })))

describe.skipIf(!haveKubeCluster())("dart run --config configs/smoke.json on Kubernetes", () => {
  it("two replicas as pods on the kwok nodes, reached through the API: the run completes, both replicas answer, nothing is left", async () => {
    const cluster = ensureKube()
    const expId = "smokekube"
    const runs = path.join(scratch, "runs")
    const files = path.join(scratch, "files")
    const kc = new KubeConfig()
    kc.loadFromFile(cluster.admin)
    const kubelet = kwokKubelet(kc, { namespace: NAMESPACE, labelSelector: experimentSelector(expId), filesDir: files, logsDir: path.join(scratch, "pod-logs") })
    const port = await freePortRun(4)
    const trainerPort = await freePort()
    try {
      const dart = dartAsync([
        // Up to the DiffAware evaluation: the out-of-distribution stages use the same servers (run.smoke.test.ts runs them).
        "run", "--config", "configs/smoke.json", "--until", "evaluate", "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
        "--override", "compute.backend=kubernetes", "--override", "compute.vllm.replicas=2", "--override", `compute.vllm.port=${port}`, "--override", `compute.trainer.port=${trainerPort}`,
        ...Object.entries({
          kubeconfig: cluster.admin, namespace: NAMESPACE, device: "cpu", gpus_per_replica: "0", listen_host: "127.0.0.1", host_paths: "true", "storage.files_dir": files,
          start_timeout_s: "300", tolerations: '[{"key":"kwok.x-k8s.io/node","operator":"Exists","effect":"NoSchedule"}]'
        }).flatMap(([k, v]) => ["--override", `compute.kubernetes.${k}=${v}`])
      ], { HF_TOKEN: "hf_kube_run_secret", DART_DEBUG: "1" })
      // A run that has not ended in 9 minutes (3 to 5 here) is stopped, so the test fails with what dart and the
      // stand-in kubelet said rather than at vitest's timeout with nothing.
      const deadline = setTimeout(() => {
        dart.child.kill("SIGINT")
        setTimeout(() => dart.child.kill("SIGKILL"), 60_000).unref()
      }, 540_000)
      const r = await dart.done.finally(() => clearTimeout(deadline))
      expect(r.code, `${r.stderr.slice(-4000)}\nkubelet: ${kubelet.events.slice(-20).join("; ")}`).toBe(0)
      // Nothing kept the process alive after the run (an open stream to the API server once did).
      expect(r.stderr).not.toContain("resources still open")
      const run = path.join(runs, expId)
      expect(existsSync(path.join(run, "report.html"))).toBe(true)
      // Each replica a pod on a GPU node, answering through its own port-forward; both joined the test-split inference
      // (each read through its own port-forward). Which of them answered how many is the
      // scheduler's race: a replica whose adapters took longer may find the 48 requests already taken.
      for (const s of ["vllm", "vllm-2"]) expect(r.stderr).toMatch(new RegExp(`compute: ${s} answers on node kwok-gpu-[01] \\(pod dart-${expId}-${s},`))
      const servers = JSON.parse(readFileSync(path.join(run, "predictions/primary_test_off_M0_DART_DART_H/manifest.json"), "utf8")).servers as Array<{ url: string; version: string | null; base_model: string | null; answered: number }>
      expect(servers.map((x) => [x.version !== null, x.base_model]), JSON.stringify(servers)).toEqual([[true, "base"], [true, "base"]])
      expect(servers.reduce((n, x) => n + x.answered, 0), JSON.stringify(servers)).toBeGreaterThan(0)
      const ledger = JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).stages
      for (const [k, v] of Object.entries(ledger)) expect((v as { status: string }).status, k).toBe("done")
      // The services' logs came through the API into runs/{EXP}/logs/.
      expect(readFileSync(path.join(run, "logs", "kubernetes-trainer.log"), "utf8").length).toBeGreaterThan(0)
      expect(JSON.stringify(kubelet.events)).toContain(`started dart-${expId}-tiny-models`)
      // Nothing of the experiment is left: pods, the Secret.
      for (let i = 0; i < 40; i++) {
        const left = [...await listObjects(cluster.api, "Pod", experimentSelector(expId)), ...await listObjects(cluster.api, "Secret", experimentSelector(expId))]
        if (left.length === 0) break
        await new Promise((res) => setTimeout(res, 500))
      }
      expect([...await listObjects(cluster.api, "Pod", experimentSelector(expId)), ...await listObjects(cluster.api, "Secret", experimentSelector(expId))].map((o) => o.metadata?.name)).toEqual([])
      for (const f of ["logs/kubernetes-vllm.log", "manifest.json", "configs/config.json"]) {
        if (existsSync(path.join(run, f))) expect(readFileSync(path.join(run, f), "utf8"), f).not.toContain("hf_kube_run_secret")
      }
    } finally {
      await kubelet.stop()
    }
  }, 720_000)
})
