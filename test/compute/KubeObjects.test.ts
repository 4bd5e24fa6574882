import { describe, expect, it } from "@effect/vitest"
import { Redacted, Schema } from "effect"
import { vllmSpec } from "../../src/compute/ContainerSpecs.ts"
import {
  dryRunPod, experimentSelector, kubePlacement, kubeServiceSpec, labelValue, neededAccess, nodePortObject, objectName, podName, podObject, renderKubeObjects, secretObject, unschedulable
} from "../../src/compute/kubernetes/KubeObjects.ts"
import { defaults, ExperimentConfig } from "../../src/config/ExperimentConfig.ts"

const decode = Schema.decodeUnknownSync(ExperimentConfig)
const kubeConfig = (kube: Record<string, unknown> = {}, more: Record<string, unknown> = {}) =>
  decode({
    ...defaults,
    run: { ...defaults.run, exp_id: "Exp_1" },
    model: { ...defaults.model, base: "Qwen/Qwen2.5-7B-Instruct" },
    ...more,
    compute: {
      ...defaults.compute, backend: "kubernetes", vllm: { ...defaults.compute.vllm, replicas: 2, tensor_parallel_size: 2 },
      kubernetes: { ...defaults.compute.kubernetes, namespace: "ml", tolerations: [{ key: "gpu", operator: "Exists", effect: "NoSchedule" }], node_selector: { pool: "a100" }, image_pull_secrets: ["regcred"], ...kube }
    }
  })

describe("Kubernetes objects", () => {
  it("names and label values are what the API accepts, hashed when the experiment id is not", () => {
    expect(objectName("dart", "smoke", "vllm-2")).toBe("dart-smoke-vllm-2")
    expect(objectName("dart", "Exp_1", "vllm")).toMatch(/^dart-exp-1-vllm-[0-9a-f]{8}$/)
    expect(objectName("dart", "x".repeat(80), "trainer").length).toBeLessThanOrEqual(63)
    expect(objectName("dart", "a".repeat(80), "t")).not.toBe(objectName("dart", "a".repeat(81), "t"))
    expect(labelValue("Exp_1")).toBe("Exp_1")
    expect(labelValue("host:123")).toMatch(/^h-[0-9a-f]{40}$/)
    expect(experimentSelector("Exp_1")).toBe("app.kubernetes.io/managed-by=dart,dart.dev/exp=Exp_1")
  })

  it("placement: N replicas of tensor_parallel_size GPUs, a classifier each, the trainer; a local model is a problem unless host_paths", () => {
    const config = kubeConfig({}, { training: { ...defaults.training, gpus: 4 } })
    const p = kubePlacement(config, { vllm: true, classifiers: ["hate"], trainer: true })
    expect(p.problems).toEqual([])
    expect(p.vllm.map((a) => [a.name, a.port])).toEqual([["vllm", 8000], ["vllm-2", 8001]])
    expect(p.classifiers.map((a) => [a.name, a.port])).toEqual([["classifier-hate", 8002]])
    expect(p.hosts[0]!.runs).toEqual(["vllm (2 nvidia.com/gpu, port 8000)", "vllm-2 (2 nvidia.com/gpu, port 8001)", "classifier-hate (1 nvidia.com/gpu, port 8002)", "trainer (4 nvidia.com/gpu, port 50051)"])
    const local = kubeConfig({}, { model: { ...defaults.model, base: "/models/qwen" } })
    expect(kubePlacement(local, { vllm: true, classifiers: [], trainer: false }).problems[0]).toContain("/models/qwen: a model on this machine's disk, which pods do not see")
    const onNode = kubeConfig({ host_paths: true }, { model: { ...defaults.model, base: "/models/qwen" } })
    expect(kubePlacement(onNode, { vllm: true, classifiers: [], trainer: false }).problems).toEqual([])
  })

  it("a pod: never restarted, GPUs as a limit, secrets only by reference, labels and annotations, selector, tolerations, pull secrets", () => {
    const config = kubeConfig()
    const spec = kubeServiceSpec(config, vllmSpec(config, { gpus: ["0", "1"] }, "0.0.0.0", Redacted.make("hf_SECRET_VALUE"), { name: "vllm-2", port: 8001, gpus: ["0", "1"] }), Redacted.make("KEY_VALUE"))
    const pod = podObject(config, spec, { expId: "Exp_1", owner: "box:123", hash: "abc", gpus: 2, secret: "dart-exp-1-secrets", filesRoot: "/dart/files", pvc: null })
    const text = JSON.stringify(pod)
    expect(text).not.toContain("hf_SECRET_VALUE")
    expect(text).not.toContain("KEY_VALUE")
    expect(pod.metadata.name).toBe(podName("Exp_1", "vllm-2"))
    expect(pod.metadata.labels).toMatchObject({ "app.kubernetes.io/managed-by": "dart", "dart.dev/exp": "Exp_1", "dart.dev/role": "vllm", "dart.dev/service": "vllm-2" })
    expect(pod.metadata.annotations).toMatchObject({ "dart.dev/spec": "abc", "dart.dev/owner": "box:123" })
    expect(pod.spec.restartPolicy).toBe("Never")
    expect(pod.spec).toMatchObject({ nodeSelector: { pool: "a100" }, tolerations: [{ key: "gpu", operator: "Exists", effect: "NoSchedule" }], imagePullSecrets: [{ name: "regcred" }] })
    const c = pod.spec.containers[0]!
    expect(c.resources).toEqual({ limits: { "nvidia.com/gpu": "2" } })
    expect(c.env.filter((e) => "valueFrom" in e)).toEqual([
      { name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "dart-exp-1-secrets", key: "HF_TOKEN" } } },
      { name: "VLLM_API_KEY", valueFrom: { secretKeyRef: { name: "dart-exp-1-secrets", key: "VLLM_API_KEY" } } }
    ])
    // Hub ids are fetched by the pod; no sleep mode (no pod shares GPUs).
    expect(c.env.some((e) => e.name === "HF_HUB_OFFLINE" || e.name === "VLLM_SERVER_DEV_MODE")).toBe(false)
    expect(c.args).not.toContain("--enable-sleep-mode")
    expect(c.args.slice(c.args.indexOf("--port"), c.args.indexOf("--port") + 2)).toEqual(["--port", "8001"])
    expect(c.readinessProbe).toMatchObject({ httpGet: { path: "/health", port: 8001 } })
    expect(pod.spec.volumes.map((v) => v.name)).toEqual(["files", "hf-cache", "shm"].filter((n) => n !== "shm" || spec.shmBytes !== null))
  })

  it("a PVC holds the files (one folder per experiment) and the HF cache; the adapters of every replica in one folder", () => {
    const config = kubeConfig({ storage: { pvc: "dart-rwx", files_dir: "/dart/files" } })
    const spec = kubeServiceSpec(config, vllmSpec(config, { gpus: ["0"] }, "0.0.0.0", undefined, { name: "vllm", port: 8000, gpus: ["0"] }), undefined)
    expect(spec.filesDir).toBe("/dart/files/adapters")
    const pod = podObject(config, spec, { expId: "Exp_1", owner: "o", hash: "h", gpus: 1, secret: null, filesRoot: "/dart/files", pvc: "dart-rwx" })
    expect(pod.spec.volumes[0]).toEqual({ name: "dart", persistentVolumeClaim: { claimName: "dart-rwx" } })
    expect(pod.spec.containers[0]!.volumeMounts.slice(0, 2)).toEqual([{ name: "dart", mountPath: "/dart/files", subPath: "Exp_1" }, { name: "dart", mountPath: "/root/.cache/huggingface", subPath: "hf-cache" }])
  })

  it("the Secret carries the values (base64) and nothing else shows them; the dry run prints every object without them", () => {
    const config = kubeConfig()
    const s = secretObject(config, { HF_TOKEN: "hf_abc" }, "o")
    expect(s.data).toEqual({ HF_TOKEN: Buffer.from("hf_abc").toString("base64") })
    const saved = process.env.HF_TOKEN
    process.env.HF_TOKEN = "hf_DRY_RUN_SECRET"
    try {
      const p = kubePlacement(config, { vllm: true, classifiers: [], trainer: true })
      const lines = renderKubeObjects(config, p, (a) => dryRunPod(config, a, p)).join("\n")
      expect(lines).toContain(`Pod ${podName("Exp_1", "vllm")}: vllm, 2 nvidia.com/gpu, port 8000`)
      expect(lines).toContain(`Pod ${podName("Exp_1", "trainer")}: trainer`)
      expect(lines).toContain('"secretKeyRef"')
      expect(lines).not.toContain("hf_DRY_RUN_SECRET")
    } finally {
      if (saved === undefined) delete process.env.HF_TOKEN
      else process.env.HF_TOKEN = saved
    }
  })

  it("the scheduler's reason, and the access a run needs", () => {
    expect(unschedulable({ status: { conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu." }] } })).toBe("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    expect(unschedulable({ status: { conditions: [{ type: "PodScheduled", status: "True" }] } })).toBeNull()
    const access = neededAccess(kubeConfig()).map((a) => `${a.verb} ${a.resource}${a.subresource === undefined ? "" : `/${a.subresource}`}`)
    expect(access).toEqual(expect.arrayContaining(["create pods", "delete pods", "create pods/portforward", "create pods/exec", "get pods/log", "create secrets"]))
    expect(neededAccess(kubeConfig({ secret: "mine" })).some((a) => a.resource === "secrets")).toBe(false)
  })

  it("the user's labels go on every object but never over dart's own, which the config refuses", () => {
    const config = kubeConfig({ labels: { team: "nlp" } })
    const spec = kubeServiceSpec(config, vllmSpec(config, { gpus: ["0"] }, "0.0.0.0", undefined, { name: "vllm", port: 8000, gpus: ["0"] }), undefined)
    const pod = podObject(config, spec, { expId: "Exp_1", owner: "o", hash: "h", gpus: 1, secret: null, filesRoot: "/dart/files", pvc: null })
    expect(pod.metadata.labels).toMatchObject({ team: "nlp", "dart.dev/exp": "Exp_1" })
    expect(() => kubeConfig({ labels: { "dart.dev/exp": "other" } })).toThrow(/label dart\.dev\/exp is dart's own/)
    expect(() => kubeConfig({ labels: { team: "not a value" } })).toThrow(/is not a Kubernetes label value/)
    // reach node-port: a Service per pod, named and labelled like it (so `down` finds it), selecting that pod only.
    const svc = nodePortObject(config, spec, { expId: "Exp_1", owner: "o" })
    expect(svc.metadata).toMatchObject({ name: podName("Exp_1", "vllm"), labels: { "dart.dev/exp": "Exp_1", "dart.dev/service": "vllm" } })
    expect(svc.spec).toMatchObject({ type: "NodePort", selector: { "dart.dev/exp": "Exp_1", "dart.dev/service": "vllm" }, ports: [{ port: 8000, targetPort: 8000 }] })
    // Port-forward and exec are WebSocket GETs: the preflight asks for get as well as create.
    const access = neededAccess(config).map((a) => `${a.verb} ${a.resource}/${a.subresource ?? ""}`)
    expect(access).toEqual(expect.arrayContaining(["get pods/portforward", "create pods/portforward", "get pods/exec", "create pods/exec"]))
  })
})
