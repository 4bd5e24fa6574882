import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { containersOf, freePort, SOCKET, uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { startSecondEngine } from "../support/SecondEngine.ts"

// The fleet losing a box: two Docker engines on this machine, the second reached as a remote box over SSH with its own
// data root and socket (the smoke run over both is test/pipeline/run.smoke.test.ts). `dart infer` places one vLLM
// replica on each, then loses the second box mid-stage (its engine, containers and SSH killed) and must finish on the
// first, answering every request once.
const VLLM_IMAGE = "dart-vllm-cpu:0.32.0"
const IMAGES = [VLLM_IMAGE, "dart-trainer-cpu:0.1.0"]
const haveImages = IMAGES.every((i) => spawnSync("docker", ["image", "inspect", i], { stdio: "ignore" }).status === 0)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-fleet-"))
const runs = path.join(scratch, "runs")

const readJsonl = (file: string): Array<any> =>
  existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)) : []

describe.skipIf(!haveImages)("a fleet of two Docker engines", () => {
  let box2: Awaited<ReturnType<typeof startSecondEngine>>
  const expId = uniqueExp("fleet")
  let args: Array<string> = []
  let vllmPort = 0

  beforeAll(async () => {
    // The second box serves only: it gets the vLLM image, not the trainer's.
    box2 = await startSecondEngine({ images: [VLLM_IMAGE], lockTimeoutS: 1800 })
    vllmPort = await freePortRun(4)
    const trainerPort = await freePort()
    const hosts = [{ name: "local", docker: `unix://${SOCKET}`, gpus: [] }, { ...box2.hostConfig, gpus: [] }]
    args = [
      "--config", "configs/smoke.json", "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=${JSON.stringify(hosts)}`,
      "--override", `compute.vllm.port=${vllmPort}`, "--override", `compute.trainer.port=${trainerPort}`,
      // Four answers per item: enough requests in flight on each replica when the second box dies.
      "--override", "inference.samples=4"
    ]
  }, 900_000)

  afterAll(async () => {
    await box2?.stop()
    rmSync(scratch, { recursive: true, force: true })
  })

  it("the second box killed mid-inference: the stage finishes on the first, every item answered once, only its in-flight requests asked again", async () => {
    const name = "lost_box"
    const answersFile = path.join(runs, expId, "predictions", name, "answers.jsonl")
    const init = await dartAsync(["init", ...args]).done
    expect(init.code, init.stderr).toBe(0)
    const infer = dartAsync(["infer", ...args, "--run-name", name, "--split", "train", "--models", "M0"])
    let stderr = ""
    infer.child.stderr.on("data", (c: Buffer) => void (stderr += c.toString()))
    // Kill once the second replica has answered a few requests (and so holds requests in flight).
    let killed = false
    const box2Answers = () => {
      const rows = readJsonl(answersFile)
      const servers = [...new Set(rows.map((a) => a.server))]
      return { rows, servers }
    }
    const deadline = Date.now() + 600_000
    while (!killed && Date.now() < deadline && infer.child.exitCode === null) {
      await new Promise((r) => setTimeout(r, 250))
      const { rows, servers } = box2Answers()
      const perServer = servers.map((s) => rows.filter((a) => a.server === s).length)
      if (servers.length === 2 && Math.min(...perServer) >= 3) {
        await box2.kill()
        killed = true
      }
    }
    const r = await infer.done
    expect(killed, `the second replica never answered 3 requests: ${stderr.slice(-2000)}`).toBe(true)
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    const lostUrl = /infer: server (http:\/\/\S+) unavailable/.exec(r.stderr)?.[1]
    expect(lostUrl, r.stderr.slice(-3000)).toBeDefined()
    const run = path.join(runs, expId)
    const outputs = readJsonl(path.join(run, "predictions", name, "outputs.jsonl"))
    const items = readJsonl(path.join(run, "datasets", "train.jsonl")).length
    // One row per item and sample, each once.
    expect(outputs.length, `${outputs.length} rows for ${items} items × 4 samples`).toBe(items * 4)
    expect(new Set(outputs.map((o) => `${o.id}#${o.sample}`)).size).toBe(items * 4)
    const answers = readJsonl(answersFile)
    expect(new Set(answers.map((a) => a.key)).size).toBe(answers.length)
    expect(answers.length, `${answers.length} answers for ${items} items × 4 samples`).toBe(items * 4)
    const manifest = JSON.parse(readFileSync(path.join(run, "predictions", name, "manifest.json"), "utf8"))
    // Requests sent = answers + those lost with the box: at most what it had in flight (its concurrency ceiling).
    const lost = manifest.servers.find((s: { url: string }) => s.url === lostUrl)
    expect(lost).toBeDefined()
    const resent = manifest.this_run.requests - answers.length
    expect(resent).toBeGreaterThanOrEqual(0)
    expect(resent).toBeLessThanOrEqual(lost.concurrency.max)
    console.log(`lost box: ${answers.length} answers, ${resent} request(s) asked again (its concurrency ceiling ${lost.concurrency.max}, answered ${lost.answered})`)
    expect(containersOf(expId)).toEqual([])
  }, 1_200_000)
})
