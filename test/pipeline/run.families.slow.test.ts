import { afterAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { layoutMessages } from "../../src/domain/ChatLayout.ts"
import { messagesFor } from "../../src/inference/InferencePlan.ts"
import { probeViaServer } from "../../src/pipeline/ChatLayoutRecord.ts"
import { Effect } from "effect"
import { dartAsync } from "../support/AdapterFixture.ts"
import { startChatServer } from "../support/ChatServer.ts"
import { containersOf, freePort, SOCKET, uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { startVllm } from "../support/VllmProcess.ts"

// Issue 24: `model.base` swapped to a tiny model carrying another chat family's real template. One family per CI run
// (DART_TEST_FAMILY, default gemma2: its template refuses the system role); every family is tried at the unit level
// (containers/trainer/tests/test_chat_families.py). The whole smoke pipeline must complete with the layout the
// template asks for, and the prompt the sidecar trained on must tokenise exactly as vLLM serves it.
const FAMILY = process.env.DART_TEST_FAMILY ?? "gemma2"
const IMAGES = ["dart-vllm-cpu:0.32.0", "dart-trainer-cpu:0.1.0"]
const haveImages = IMAGES.every((i) => spawnSync("docker", ["image", "inspect", i], { stdio: "ignore" }).status === 0)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-families-"))
const runs = path.join(scratch, "runs")
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const readJsonl = (file: string): Array<any> => readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l))
const trainerPython = path.resolve("containers/trainer/.venv/bin/python")

/** The prompt part of a training row as the sidecar (TRL) tokenises it: the template with the generation prompt. */
const trainedPromptIds = (model: string, messages: ReadonlyArray<unknown>): Array<number> => {
  const script = [
    "import json, sys",
    "from transformers import AutoTokenizer",
    "tok = AutoTokenizer.from_pretrained(sys.argv[1])",
    "ids = tok.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True, tokenize=True)",
    "ids = ids['input_ids'] if hasattr(ids, 'keys') else ids",
    "print(json.dumps(list(ids)))"
  ].join("\n")
  const r = spawnSync(trainerPython, ["-c", script, model, JSON.stringify(messages)], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!)
}

const hostsOverride = `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`

describe.skipIf(!haveImages)(`model.base @tiny:${FAMILY}`, () => {
  it("completes every stage with the template's layout; trained and served prompts tokenise the same", async () => {
    const expId = uniqueExp("fam")
    const vllmPort = await freePortRun()
    const trainerPort = await freePort()
    const args = [
      // Up to the DiffAware evaluation: the out-of-distribution stages send the same layouts (run.smoke.test.ts runs them).
      "run", "--config", "configs/smoke.json", "--until", "evaluate", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", hostsOverride,
      "--override", `model.base=@tiny:${FAMILY}`, "--override", `compute.vllm.port=${vllmPort}`, "--override", `compute.trainer.port=${trainerPort}`
    ]
    const run = path.join(runs, expId)
    const r = await dartAsync(args).done
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    expect(containersOf(expId)).toEqual([])

    const record = JSON.parse(readFileSync(path.join(run, "chat_layout.json"), "utf8"))
    const folds = FAMILY === "gemma2" || FAMILY === "mistral"
    expect(record).toMatchObject({ base: path.join(run, "models", `tiny-${FAMILY}`, "base"), setting: "auto", system: folds ? "folded" : "native" })
    expect(r.stdout).toContain(`chat template: system role ${folds ? "folded into the first user turn" : "native"}`)
    if (FAMILY === "gemma2") expect(record.reason).toContain("System role not supported")
    expect(JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).chat_layout).toMatchObject({ system: record.system })

    for (const k of ["train/DART", "train/DART_H", "infer/primary_test_off_M0_DART_DART_H", "evaluate/eval_main"]) {
      expect(JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).stages[k]?.status, k).toBe("done")
    }
    // Every answer of the test predictions parses (the smoke run constrains them to end on a conclusion line).
    for (const row of readJsonl(path.join(run, "predictions/primary_test_off_M0_DART_DART_H/outputs.jsonl"))) {
      for (const m of ["M0", "DART", "DART_H"]) expect(row.outputs[m].text).toMatch(/Conclusion: (YES|NO)$/)
    }
    // Training rows are laid out as requests are: no system message reaches a folding template.
    const trained = readJsonl(path.join(run, "adapters/DART/train.jsonl"))
    expect(trained.length).toBeGreaterThan(0)
    for (const row of trained) expect(row.messages.some((m: { role: string }) => m.role === "system")).toBe(!folds)

    // The same item, trained and served: token ids of the trained prompt part equal vLLM's rendering of the request.
    const base = path.join(run, "models", `tiny-${FAMILY}`, "base")
    const item = readJsonl(path.join(run, "datasets/train.jsonl")).find((i) => trained.some((t) => t.id.startsWith(`${i.id}#`)))!
    const row = trained.find((t) => t.id.startsWith(`${item.id}#`))!
    const served = layoutMessages({ system: record.system }, messagesFor("dart", item, ""))
    expect(row.messages.slice(0, -1)).toEqual(served)
    const vllm = await startVllm(base, path.join(scratch, "vllm"), { maxLoraRank: 8 })
    try {
      const tokens = await fetch(`${vllm.url}/tokenize`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "base", messages: served, add_generation_prompt: true })
      }).then((x) => x.json() as Promise<{ tokens: Array<number> }>)
      expect(tokens.tokens).toEqual(trainedPromptIds(base, row.messages.slice(0, -1)))
      // The server probe (used when the run is given vLLM endpoints) reaches the same layout as the trainer image's.
      const viaServer = await Effect.runPromise(probeViaServer(vllm.url, [{ name: "student", messages: messagesFor("dart", item, ""), add_generation_prompt: true }]))
      expect(viaServer.layout).toBe(record.system)
    } finally {
      await vllm.stop()
    }
  }, 1_500_000)

  it("a template that cannot render stops the run in preflight, before any teacher request", async () => {
    const built = readdirSync(runs).map((e) => path.join(runs, e, "models", `tiny-${FAMILY}`, "base")).find((p) => existsSync(p))!
    const broken = path.join(scratch, "broken-model")
    cpSync(built, broken, { recursive: true })
    const raise = "{{ raise_exception('this template renders nothing') }}"
    if (existsSync(path.join(broken, "chat_template.jinja"))) writeFileSync(path.join(broken, "chat_template.jinja"), raise)
    const tc = JSON.parse(readFileSync(path.join(broken, "tokenizer_config.json"), "utf8"))
    if ("chat_template" in tc) writeFileSync(path.join(broken, "tokenizer_config.json"), JSON.stringify({ ...tc, chat_template: raise }))
    const teacher = await startChatServer()
    try {
      const r = await dartAsync([
        "run", "--config", "configs/smoke.json", "--exp-id", uniqueExp("broken"), "--override", `run.runs_dir=${runs}`, "--override", hostsOverride,
        "--override", `model.base=${broken}`, "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${teacher.url}`,
        "--override", "teacher.api_key_env=DART_TEST_TEACHER_KEY", "--override", "teacher.constrain=null"
      ], { DART_TEST_TEACHER_KEY: "test-key" }).done
      expect(r.code, r.stderr.slice(-2000)).toBe(5)
      expect(r.stdout).toMatch(/MISSING +chat template: .*this template renders nothing/)
      expect(teacher.requests).toEqual([])
    } finally {
      await teacher.close()
    }
  }, 600_000)
})
