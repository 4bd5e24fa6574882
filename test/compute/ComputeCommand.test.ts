import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dart } from "../support/Cli.ts"
import { containersOf, ensureTestImage, freePort, SOCKET, TEST_IMAGE, uniqueExp } from "../support/DockerEngine.ts"

// `dart compute` as a user runs it, against the real engine, with the test image standing in for vLLM
// (it takes the same flags and answers /health).
const scratch = mkdtempSync(path.join(tmpdir(), "dart-compute-cli-"))
beforeAll(() => ensureTestImage(), 180_000)
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const flags = (exp: string, port: number) => [
  "--exp-id", exp, "--override", `run.runs_dir=${path.join(scratch, "runs")}`,
  "--override", `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`,
  "--override", `compute.vllm.cpu_image=${TEST_IMAGE}`, "--override", `compute.vllm.port=${port}`,
  // A folder on the box, not a hub id: the stand-in image serves nothing, and nothing is fetched for it.
  "--override", `model.base=${scratch}`
]

/** Starts `dart compute up vllm --attach` and resolves once it says the containers are ready. */
const attach = (exp: string, port: number) =>
  new Promise<{ child: ReturnType<typeof spawn>; exited: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> }>((resolve, reject) => {
    const child = spawn(process.execPath, ["bin/dart.js", "compute", "up", "vllm", "--attach", ...flags(exp, port)], { cwd: process.cwd(), env: { ...process.env, EXP_ID: "" } })
    let stdout = ""
    let stderr = ""
    const exited = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((r) =>
      child.on("exit", (code, signal) => r({ code, signal, stdout, stderr })))
    child.stdout!.on("data", (d) => {
      stdout += d
      if (stdout.includes("ready;")) resolve({ child, exited })
    })
    child.stderr!.on("data", (d) => (stderr += d))
    void exited.then((e) => reject(new Error(`dart compute up exited early (${e.code}): ${e.stderr}`)))
  })

describe("dart compute", () => {
  it("up → status → down; the container is kept between commands", async () => {
    const exp = uniqueExp("cli")
    const port = await freePort()
    const up = dart(["compute", "up", "vllm", ...flags(exp, port)])
    expect(up.stderr).toBe("")
    expect(up.code).toBe(0)
    expect(up.stdout).toContain(`vllm http://127.0.0.1:${port}`)
    expect(containersOf(exp)).toHaveLength(1)
    const again = dart(["compute", "up", "vllm", ...flags(exp, port)])
    expect(again.stdout).toContain("reused")
    const status = dart(["compute", "status", "--json", ...flags(exp, port)])
    expect(status.code).toBe(0)
    const services = JSON.parse(status.stdout).services
    // Every host with its devices and what the placement puts there.
    expect(JSON.parse(status.stdout).hosts[0]).toMatchObject({ name: "local", gpus: "CPU", idle: null })
    expect(JSON.parse(status.stdout).hosts[0].places[0]).toBe(`vllm (CPU, port ${port})`)
    expect(services).toMatchObject([{ host: "local", name: "vllm", role: "vllm", state: "running", health: "healthy", gpus: "cpu", owner: "kept" }])
    const down = dart(["compute", "down", ...flags(exp, port)])
    expect(down.stdout).toContain(`removed dart-${exp}-vllm`)
    expect(containersOf(exp)).toEqual([])
    expect(readFileSync(path.join(scratch, "runs", exp, "logs", "local-vllm.log"), "utf8")).toContain("request GET /health")
  }, 120_000)

  it("SIGINT while its containers run leaves none behind", async () => {
    const exp = uniqueExp("int")
    const { child, exited } = await attach(exp, await freePort())
    expect(containersOf(exp)).toHaveLength(1)
    child.kill("SIGINT")
    const end = await exited
    expect(end.code).toBe(130)
    expect(containersOf(exp)).toEqual([])
  }, 120_000)

  it("after SIGKILL the next command removes the orphan", async () => {
    const exp = uniqueExp("kill")
    const port = await freePort()
    const { child, exited } = await attach(exp, port)
    child.kill("SIGKILL")
    await exited
    // Nobody was left to clean up: the container still runs.
    expect(containersOf(exp)).toHaveLength(1)
    const status = dart(["compute", "status", ...flags(exp, port)])
    expect(status.code).toBe(0)
    expect(status.stderr).toContain(`removed dart-${exp}-vllm: its dart process is gone`)
    expect(containersOf(exp)).toEqual([])
  }, 120_000)
})
