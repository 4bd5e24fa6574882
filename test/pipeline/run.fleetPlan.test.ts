import { afterAll, describe, expect, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"

// `dart run --dry-run` over four GPU boxes, each a stand-in Docker engine on a unix socket that answers what the
// preflight asks (version, info with its CDI GPUs, image inspect) with a recorded engine's shapes. Nothing starts.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-fleet-plan-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const standInEngine = (socket: string, gpus: number) => {
  const seen: Array<string> = []
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url!).replace(/^\/v[\d.]+/, "")
    seen.push(`${req.method} ${url}`)
    res.setHeader("Content-Type", "application/json")
    if (url === "/_ping") return res.end("OK")
    if (url === "/version") return res.end(JSON.stringify({ Version: "28.3.0", ApiVersion: "1.51" }))
    if (url === "/info") {
      return res.end(JSON.stringify({
        ServerVersion: "28.3.0",
        Runtimes: { runc: {}, nvidia: {} },
        DiscoveredDevices: Array.from({ length: gpus }, (_, i) => ({ Source: "cdi", ID: `nvidia.com/gpu=${i}` }))
      }))
    }
    if (/^\/images\/.+\/json$/.test(url)) return res.end(JSON.stringify({ Id: "sha256:0" }))
    res.statusCode = 404
    res.end(JSON.stringify({ message: `not in this stand-in: ${url}` }))
  })
  return {
    seen,
    listen: () => new Promise<void>((resolve) => server.listen(socket, () => resolve())),
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

describe("dart run --dry-run over a fleet", () => {
  it("prints every host with its replicas, the trainer on the biggest box, and checks all four hosts", async () => {
    const sizes = { a: 4, b: 8, c: 1, d: 2 }
    const engines = Object.entries(sizes).map(([name, n]) => ({ name, n, engine: standInEngine(path.join(scratch, `${name}.sock`), n) }))
    await Promise.all(engines.map((e) => e.engine.listen()))
    try {
      const hosts = engines.map((e) => ({ name: e.name, docker: `unix://${path.join(scratch, `${e.name}.sock`)}`, gpus: Array.from({ length: e.n }, (_, i) => String(i)) }))
      const r = await dartAsync([
        "run", "--dry-run", "--config", "configs/exp_acl.json", "--override", `run.runs_dir=${path.join(scratch, "runs")}`,
        "--override", `compute.hosts=${JSON.stringify(hosts)}`, "--override", "compute.vllm.tensor_parallel_size=2", "--override", "training.gpus=4"
      ], { DEEPSEEK_API_KEY: "k" }).done
      expect(r.stdout).toContain([
        "hosts (docker):",
        "  a (GPU 0,1,2,3): vllm (GPU 0,1, port 8000), vllm-4 (GPU 2,3, port 8003)",
        "  b (GPU 0,1,2,3,4,5,6,7): vllm-2 (GPU 0,1, port 8001), vllm-5 (GPU 2,3, port 8004), vllm-6 (GPU 4,5, port 8005), vllm-7 (GPU 6,7, port 8006), trainer (GPU 0,1,2,3, port 50051)",
        "  c (GPU 0): classifier-toxicity (GPU 0, port 8007), classifier-hate (GPU 0, port 8008)",
        "  d (GPU 0,1): vllm-3 (GPU 0,1, port 8002)"
      ].join("\n"))
      // Every host answered its own checks, GPUs counted from its engine.
      for (const e of engines) {
        expect(r.stdout).toContain(`ok       host ${e.name}: unix://${path.join(scratch, `${e.name}.sock`)} answers (Docker 28.3.0)`)
        expect(r.stdout).toMatch(new RegExp(`ok {7}GPUs on ${e.name}: ${e.n} GPU\\(s\\)`))
        expect(e.engine.seen).toContain("GET /info")
      }
      expect(r.stdout).toContain("ok       image dart-trainer:0.1.0: present on b")
      // No service was created on any engine: only the preflight's throwaway tasks (hub check, chat template), unnamed.
      const creates = engines.flatMap((e) => e.engine.seen).filter((s) => s.startsWith("POST /containers/create"))
      expect(creates.length).toBeGreaterThan(0)
      expect(creates.filter((s) => s.includes("name="))).toEqual([])
    } finally {
      await Promise.all(engines.map((e) => e.engine.close()))
    }
  }, 60_000)

  it("leaves a box that does not answer out of the plan, with why, when the others can carry its services", async () => {
    const engines = [{ name: "a", n: 4 }, { name: "b", n: 2 }].map((e) => ({ ...e, engine: standInEngine(path.join(scratch, `live-${e.name}.sock`), e.n) }))
    await Promise.all(engines.map((e) => e.engine.listen()))
    try {
      const dead = path.join(scratch, "dead.sock")
      const hosts = [
        { name: "big", docker: `unix://${dead}`, gpus: ["0", "1", "2", "3", "4", "5", "6", "7"] },
        ...engines.map((e) => ({ name: e.name, docker: `unix://${path.join(scratch, `live-${e.name}.sock`)}`, gpus: Array.from({ length: e.n }, (_, i) => String(i)) }))
      ]
      const r = await dartAsync([
        "run", "--dry-run", "--config", "configs/exp_acl.json", "--override", `run.runs_dir=${path.join(scratch, "runs-live")}`,
        "--override", `compute.hosts=${JSON.stringify(hosts)}`, "--override", "training.gpus=2"
      ], { DEEPSEEK_API_KEY: "k" }).done
      // Declared, the 8-GPU box would take the trainer; it does not answer, so a takes it, and the run may go on.
      expect(r.stdout).toContain(`  big (GPU 0,1,2,3,4,5,6,7): nothing: does not answer (unix://${dead}: connect ENOENT ${dead})`)
      expect(r.stdout).toMatch(/ {2}a \(GPU 0,1,2,3\): [^\n]*trainer \(GPU 0,1, port 50051\)/)
      // Nothing is missing for want of the dead box (the stand-in engines cannot run the hub check's task: those lines
      // are theirs); the chat template is probed on the first box that answers.
      expect(r.stdout).not.toMatch(/MISSING {2}(host|placement|vllm host|classifiers host|trainer host|image)/)
      const template = /\n {2}(?:ok|MISSING) +chat template: ([^\n]*)\n/.exec(r.stdout)?.[1]
      expect(template).toBeDefined()
      expect(template).not.toContain("dead.sock")
    } finally {
      await Promise.all(engines.map((e) => e.engine.close()))
    }
  }, 60_000)
})
