import * as NodeServices from "@effect/platform-node/NodeServices"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { root } from "../../src/cli/Root.ts"
import { predictionFromOriginal, OriginalPredictionRow } from "../../src/compat/OriginalPredictions.ts"
import { Schema } from "effect"

/**
 * The original README's nine steps (test/fixtures/original/nine_steps.sh: verbatim but for the
 * module -> command substitution), run in order in a scratch project whose configs/exp_acl.json is
 * the README's. Each step is checked twice: the real `dart` binary accepts the line and reaches its
 * stage (through --dry-run where the stage has one), and a parse of the same line gives the command
 * the intended options.
 */

const repo = process.cwd()
const vectors = path.join(repo, "test/vectors/original")
const EXP_ID = "nine"

/** Shell words of the fixture's commands: `\` continuations joined, quotes removed, $EXP_ID expanded. */
const parseSteps = (text: string) => {
  const steps: Array<{ title: string; argv: Array<string> }> = []
  let title = ""
  for (const block of text.replace(/\\\n/g, " ").split("\n")) {
    if (block.startsWith("# Step")) title = block.slice(2)
    if (!block.startsWith("dart ")) continue
    const words: Array<string> = []
    for (const m of block.matchAll(/"([^"]*)"|(\S+)/g)) words.push((m[1] ?? m[2]!).replace(/\$\{EXP_ID\}|\$EXP_ID/g, EXP_ID))
    steps.push({ title, argv: words.slice(1) })
  }
  return steps
}

const steps = parseSteps(readFileSync(path.join(repo, "test/fixtures/original/nine_steps.sh"), "utf8"))

const closedPort = () =>
  new Promise<number>((resolve) => {
    const s = createServer()
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })

const dir = mkdtempSync(path.join(tmpdir(), "dart-nine-"))
mkdirSync(path.join(dir, "configs"))
cpSync(path.join(repo, "test/fixtures/original/exp_acl.json"), path.join(dir, "configs/exp_acl.json"))
symlinkSync(path.join(repo, "benchmark_suite"), path.join(dir, "benchmark_suite"))
const run = (rel: string) => path.join(dir, "runs", EXP_ID, rel)

/**
 * This machine has no GPU, vLLM, Docker or API. No API key is set, and the steps that need servers
 * (infer, audit) get every service pointed at a closed loopback port, so they fail fast and locally.
 */
let environment: Array<string> = []
let closed = 0

const dart = (argv: ReadonlyArray<string>, services = false) => {
  const r = spawnSync(process.execPath, [path.join(repo, "bin/dart.js"), ...argv, ...(services ? environment : [])], {
    cwd: dir,
    env: { ...process.env, EXP_ID, DEEPSEEK_API_KEY: "", OPENAI_API_KEY: "", HF_TOKEN: "", DOCKER_HOST: `tcp://127.0.0.1:${closed}` },
    encoding: "utf8",
    timeout: 120_000
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, timedOut: r.error !== undefined }
}

/** Parses `argv` with the real root and `command`, whose handler only records what it was given. */
const parse = async (command: unknown, argv: ReadonlyArray<string>) => {
  let captured: { input: any; shared: any } | undefined
  const probe = Command.withHandler(command as any, (input: unknown) =>
    Effect.gen(function*() {
      const shared = yield* root
      captured = { input, shared }
    }))
  const cli = root.pipe(Command.withSubcommands([probe as any]))
  await Effect.runPromise(Command.runWith(cli, { version: "test" })(argv).pipe(Effect.provide(NodeServices.layer)) as Effect.Effect<void>)
  if (captured === undefined) throw new Error(`the command line did not reach the ${argv[0]} handler`)
  return captured
}

/** The command module by the convention of src/cli (InitCommand.ts exports initCommand …). */
const commandOf = async (name: string) => {
  const module = `src/cli/${name[0]!.toUpperCase()}${name.slice(1)}Command.ts`
  if (!existsSync(path.join(repo, module))) throw new Error(`dart ${name}: ${module} does not exist (the command has not landed)`)
  const m = await import(path.join(repo, module))
  const c = m[`${name}Command`]
  if (c === undefined) throw new Error(`dart ${name}: ${module} exports no ${name}Command`)
  return c
}

const some = (value: unknown) => expect.objectContaining({ _tag: "Some", value })
const none = expect.objectContaining({ _tag: "None" })

/** Every primitive in a parsed input (Option values included). */
const values = (o: unknown): Array<unknown> =>
  typeof o === "object" && o !== null ? Object.values(o).flatMap(values) : [o]

/** The real binary accepted the line: it was not a command-line usage error (exit 2) and it finished. */
const expectAccepted = (step: number, r: ReturnType<typeof dart>) => {
  const what = `step ${step} (${steps[step - 1]!.title}): dart ${steps[step - 1]!.argv[0]}`
  if (r.timedOut) throw new Error(`${what} did not finish within 120 s`)
  if (r.code === 2 || /Unrecognized flag|Unknown subcommand|Invalid subcommand/i.test(r.stderr)) {
    throw new Error(`${what} was rejected by the command line (exit ${r.code}):\n${r.stderr.slice(0, 2000)}`)
  }
}

const readmeKeys = ["model.base_model_name_or_path", "model.torch_dtype", "teacher.provider", "teacher.model", "teacher.max_concurrency",
  "training.num_train_epochs", "training.learning_rate", "training.per_device_train_batch_size", "lora.r", "lora.alpha", "lora.target_modules"]

describe("the original README's nine steps, as written", () => {
  it("the fixture holds nine dart command lines", async () => {
    expect(steps.map((s) => s.argv[0])).toEqual(["init", "teacher", "train", "infer", "audit", "teacher", "train", "infer", "evaluate"])
    for (const s of steps) expect(s.argv).toContain("--materialize")
    const port = await closedPort()
    closed = port
    const url = `http://127.0.0.1:${port}/v1`
    environment = [
      "--override", `compute.vllm.endpoint=${url}`,
      "--override", `compute.classifier_endpoint=${url}`,
      "--override", `judge.base_url=${url}`,
      "--override", `teacher.base_url=${url}`,
      "--override", `compute.hosts=[{"name":"local","docker":"tcp://127.0.0.1:${port}","gpus":"all"}]`,
      "--override", `compute.trainer.endpoint=127.0.0.1:${port}`
    ]
  })

  it("step 1: dart init takes the README's exp_acl.json with one notice per key", async () => {
    const { argv } = steps[0]!
    const r = dart(argv)
    expectAccepted(1, r)
    expect(r.stderr).not.toContain("error")
    expect(r.code).toBe(0)
    for (const k of readmeKeys) expect(r.stderr).toContain(`configs/exp_acl.json: ${k} = `)
    expect(r.stdout).toContain(`initialized ${path.join(dir, "runs", EXP_ID)}: 14000 items`)
    const snapshot = JSON.parse(readFileSync(run("configs/config.json"), "utf8"))
    expect(snapshot.training.lora.target_modules).toEqual(["q_proj", "v_proj", "k_proj", "o_proj"])
    expect(snapshot.model).toMatchObject({ base: "meta-llama/Llama-3.1-8B-Instruct", dtype: "bfloat16" })
    const p = await parse(await commandOf("init"), argv)
    expect(p.shared).toMatchObject({ config: some("configs/exp_acl.json"), expId: some(EXP_ID), materialize: true })
  })

  it("step 2: dart teacher --task distill (through --dry-run)", async () => {
    const { argv } = steps[1]!
    const r = dart([...argv, "--dry-run"])
    expectAccepted(2, r)
    expect(r.code).toBe(0)
    const train = readFileSync(run("datasets/train.jsonl"), "utf8").trim().split("\n").length
    expect(r.stdout).toContain(`distill: ${train} items, 0 done, ${train} to do`)
    const p = await parse(await commandOf("teacher"), argv)
    expect(p.input).toMatchObject({ task: "distill", input: none, dryRun: false })
    expect(p.shared).toMatchObject({ override: [`run.exp_id=${EXP_ID}`], materialize: true })
  })

  it("step 3: dart train --stage mdac reaches the DART stage", async () => {
    const { argv } = steps[2]!
    const r = dart(argv)
    expectAccepted(3, r)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${run("teacher_outputs/distill/outputs.jsonl")} does not exist: run \`dart teacher --task distill\` first`)
    const p = await parse(await commandOf("train"), argv)
    expect(p.input).toMatchObject({ stage: "mdac", adapterName: "DART", recipe: none, initAdapter: none, epochs: none })
  })

  const inferStep = async (step: number) => {
    const { argv } = steps[step - 1]!
    const r = dart(argv, true)
    expectAccepted(step, r)
    const p = await parse(await commandOf("infer"), argv)
    const got = values(p.input).map(String)
    for (const v of ["off", "M0", argv[argv.indexOf("--model-b-id") + 1], `runs/${EXP_ID}/adapters/${argv[argv.indexOf("--model-b-id") + 1]}/final`, argv[argv.indexOf("--run-name") + 1]]) {
      expect(got, `dart infer parsed ${JSON.stringify(p.input)}`).toContain(v)
    }
  }

  it("step 4: dart infer --paired M0 vs DART is accepted and reaches its stage", () => inferStep(4))

  it("step 5: dart audit is accepted and reaches its stage", async () => {
    const { argv } = steps[4]!
    // Step 4 cannot finish here (no vLLM): its rows are the original writer's, in dart's contract.
    const input = run("predictions/primary_test_off_M0_vs_DART/outputs.jsonl")
    if (!existsSync(input)) {
      mkdirSync(path.dirname(input), { recursive: true })
      const decode = Schema.decodeUnknownSync(OriginalPredictionRow)
      const rows = readFileSync(path.join(vectors, "paired/outputs.jsonl"), "utf8").trim().split("\n").map((l) => predictionFromOriginal(decode(JSON.parse(l))))
      writeFileSync(input, rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    }
    const r = dart(argv, true)
    expectAccepted(5, r)
    const p = await parse(await commandOf("audit"), argv)
    const got = values(p.input).map(String)
    for (const v of [`runs/${EXP_ID}/predictions/primary_test_off_M0_vs_DART/outputs.jsonl`, "M0", "DART", "audit_M0_vs_DART", "0.01", "validate", "deepseek", "deepseek-chat"]) {
      expect(got, `dart audit parsed ${JSON.stringify(p.input)}`).toContain(v)
    }
  })

  it("step 6: dart teacher --task repair reads the pool (the original's, through --dry-run)", async () => {
    const { argv } = steps[5]!
    const pool = run("audit/audit_M0_vs_DART/regression_pool.jsonl")
    mkdirSync(path.dirname(pool), { recursive: true })
    cpSync(path.join(vectors, "audit/regression_pool.jsonl"), pool)
    // The original's rows carry its own ids, not this run's: repairing them trains on them, so dart asks for the flag.
    const refused = dart([...argv, "--dry-run"])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain("--allow-foreign-rows")
    const r = dart([...argv, "--allow-foreign-rows", "--dry-run"])
    expectAccepted(6, r)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("repair: 2 items, 0 done, 2 to do")
    const p = await parse(await commandOf("teacher"), argv)
    expect(p.input).toMatchObject({ task: "repair", input: some(`runs/${EXP_ID}/audit/audit_M0_vs_DART/regression_pool.jsonl`), dryRun: false })
  })

  it("step 7: dart train --stage mdac_h --recipe mix reaches the DART_H stage with its options", async () => {
    const { argv } = steps[6]!
    const r = dart(argv)
    expectAccepted(7, r)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${run("teacher_outputs/distill/outputs.jsonl")} does not exist`)
    const p = await parse(await commandOf("train"), argv)
    expect(p.input).toMatchObject({
      stage: "mdac_h",
      adapterName: "DART_H",
      recipe: some("mix"),
      initAdapter: some(`runs/${EXP_ID}/adapters/DART/final`),
      repairOversample: some("mild=1,moderate=2,severe=3,extreme=4"),
      epochs: some(3)
    })
  })

  it("step 8: dart infer --paired M0 vs DART_H is accepted and reaches its stage", () => inferStep(8))

  it("step 9: dart evaluate scores the M0 vs DART_H predictions (the original writer's rows)", async () => {
    const { argv } = steps[8]!
    const pred = run("predictions/primary_test_off_M0_vs_DART_H/outputs.jsonl")
    mkdirSync(path.dirname(pred), { recursive: true })
    cpSync(path.join(vectors, "paired_dart_h/outputs.jsonl"), pred)
    const r = dart(argv)
    expectAccepted(9, r)
    expect(r.code).toBe(0)
    const summary = JSON.parse(readFileSync(run("evaluation/eval_main/summary.json"), "utf8"))
    expect(summary.models).toEqual(["M0", "DART_H"])
    expect(summary.overall.DART_H.n).toBe(6)
    const p = await parse(await commandOf("evaluate"), argv)
    expect(p.input).toMatchObject({ pred: `runs/${EXP_ID}/predictions/primary_test_off_M0_vs_DART_H/outputs.jsonl`, runName: "eval_main", aName: "M0", bName: some("DART_H") })
  })
})
