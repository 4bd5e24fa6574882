import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { containersOf, freePort, SOCKET, uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { startEchoProvider } from "../support/EchoProvider.ts"
import { type HubStandIn, startHubStandIn } from "../support/HubStandIn.ts"
import { trainerPython } from "../support/Trainer.ts"

// A base model named by hub id, as a user names meta-llama/Llama-3.1-8B-Instruct: fetched from a loopback stand-in of
// the Hub into the host's HF cache by dart's fetch task, then served and trained offline by the real vLLM and trainer
// containers. A wrong id and a gated id without a token stop in preflight, before any teacher request.
const IMAGES = ["dart-vllm-cpu:0.32.0", "dart-trainer-cpu:0.1.0"]
const haveImages = IMAGES.every((i) => spawnSync("docker", ["image", "inspect", i], { stdio: "ignore" }).status === 0)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-hub-"))
const runs = path.join(scratch, "runs")
const hfCache = path.join(scratch, "hf")
let hub: HubStandIn


beforeAll(async () => {
  if (!haveImages) return
  // The smoke profile's tiny chat model, built as dart builds it, published under hub ids.
  const models = path.join(scratch, "models")
  const built = spawnSync(trainerPython(), ["-m", "dart_trainer.tiny_model", "--out", models, "--suite", path.resolve("benchmark_suite"), "--seed", "42"], {
    cwd: "containers/trainer", encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" }
  })
  if (built.status !== 0) throw new Error(`tiny models: ${built.stderr}`)
  hub = await startHubStandIn({
    repos: {
      "dart-test/tiny-chat": { dir: path.join(models, "base") },
      "dart-test/gated-chat": { dir: path.join(models, "base"), gated: true, token: "hf_test_gate_ok" }
    }
  })
}, 300_000)

afterAll(async () => {
  await hub?.stop()
  rmSync(scratch, { recursive: true, force: true })
})

const baseArgs = async (expId: string, base: string) => [
  "run", "--config", "configs/smoke.json", "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
  "--override", `model.base=${base}`, "--override", `compute.hf_cache=${hfCache}`,
  "--override", `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`,
  "--override", `compute.vllm.port=${await freePortRun()}`, "--override", `compute.trainer.port=${await freePort()}`
]

describe.skipIf(!haveImages)("hub model ids", () => {
  it("a wrong id and a gated id without a token stop in preflight (exit 5) with the model named; no teacher request is sent", async () => {
    const teacher = await startEchoProvider({ mode: "ok" })
    try {
      const paid = ["--override", "teacher.provider=compatible", "--override", `teacher.base_url=${teacher.url}`]
      const env = { HF_ENDPOINT: hub.url, OPENAI_API_KEY: "sk-test-hub", HF_TOKEN: "" }
      const missing = await dartAsync([...await baseArgs(uniqueExp("hubmiss"), "dart-test/no-such-model"), ...paid], env).done
      expect(missing.code, missing.stderr.slice(-2000)).toBe(5)
      expect(missing.stdout + missing.stderr).toMatch(/model dart-test\/no-such-model: on local: .*dart-test\/no-such-model/)
      const gated = await dartAsync([...await baseArgs(uniqueExp("hubgate"), "dart-test/gated-chat"), ...paid], env).done
      expect(gated.code, gated.stderr.slice(-2000)).toBe(5)
      expect(gated.stdout + gated.stderr).toMatch(/model dart-test\/gated-chat: on local: .*gated.*HF_TOKEN/s)
      expect(teacher.requests).toEqual([])
      // Nothing was downloaded for either.
      expect(existsSync(path.join(hfCache, "hub", "models--dart-test--no-such-model"))).toBe(false)
    } finally {
      await teacher.stop()
    }
  }, 600_000)

  it("dart run with model.base a hub id: fetched once into the host's HF cache, then trained and served offline", async () => {
    const expId = uniqueExp("hub")
    const args = [...await baseArgs(expId, "dart-test/tiny-chat"), "--until", "infer_audit"]
    try {
      const r = await dartAsync(args, { HF_ENDPOINT: hub.url }).done
      expect(r.code, r.stderr.slice(-4000)).toBe(0)
      expect(r.stdout).toMatch(/ok +model dart-test\/tiny-chat: dart-test\/tiny-chat is readable/)
      expect(r.stderr).toContain("compute: dart-test/tiny-chat")
      // The snapshot is in the cache the containers share, once.
      const repo = path.join(hfCache, "hub", "models--dart-test--tiny-chat")
      expect(readdirSync(path.join(repo, "snapshots"))).toEqual([hub.commitOf("dart-test/tiny-chat")])
      // The trainer trained it and vLLM served base and adapter from it.
      expect(existsSync(path.join(runs, expId, "adapters", "DART", "final", "adapter_model.safetensors"))).toBe(true)
      expect(readdirSync(path.join(runs, expId, "predictions")).length).toBeGreaterThan(0)
      const bodies = hub.requests.filter((q) => q.method === "GET" && q.bodyBytes > 0).length
      // A second stage run in the same run fetches nothing: the cache answers.
      const again = await dartAsync(args, { HF_ENDPOINT: hub.url }).done
      expect(again.code, again.stderr.slice(-3000)).toBe(0)
      expect(hub.requests.filter((q) => q.method === "GET" && q.bodyBytes > 0).length).toBe(bodies)
    } finally {
      expect(containersOf(expId)).toEqual([])
    }
  }, 1_200_000)
})
