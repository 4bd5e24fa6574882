import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { sha256Hex } from "../../common/Hashing.ts"
import { type ExternalSuiteName, externalSuiteOrder } from "../../config/ExperimentConfig.ts"
import { DatasetError } from "../BenchmarkSuite.ts"
import { loadBold } from "./BoldLoader.ts"
import { type ExternalRow, type Sampling, type SamplingSpec, SuiteFormatError, type SuiteFile } from "./ExternalSuite.ts"
import { loadHateCheck } from "./HateCheckLoader.ts"
import { loadHolisticBias } from "./HolisticBiasLoader.ts"
import { loadRealToxicityPrompts, RtpImportRecord } from "./RealToxicityPromptsLoader.ts"

/** `datasets.external` (src/config/ExperimentConfig.ts). */
export interface ExternalSpec {
  readonly suites: ReadonlyArray<ExternalSuiteName> | null
  readonly sampling: Sampling
  readonly seed: number
  readonly holisticbias_version: string
  readonly limits: Readonly<Record<ExternalSuiteName, number | null>>
}

export interface ExternalSource {
  readonly file: string
  readonly sha256: string
  readonly bytes: number
}

export interface LoadedExternalSuite {
  readonly suite: ExternalSuiteName
  readonly rows: ReadonlyArray<ExternalRow>
  readonly sources: ReadonlyArray<ExternalSource>
}

export const externalDir = (suiteDir: string) => path.join(suiteDir, "external")
export const rtpFile = (suiteDir: string) => path.join(externalDir(suiteDir), "RealToxicityPrompts", "prompts.jsonl")
/** Written by `dart datasets import` beside the imported `prompts.jsonl`. */
export const rtpRecordFile = (suiteDir: string) => path.join(externalDir(suiteDir), "RealToxicityPrompts", "IMPORT.json")

const hbFiles = (suiteDir: string, version: string) => {
  const dir = path.join(externalDir(suiteDir), "HolisticBias", version)
  return {
    descriptors: path.join(dir, "descriptors.json"),
    nouns: path.join(dir, "nouns.json"),
    templates: path.join(dir, "sentence_templates.json"),
    standalone: path.join(dir, "standalone_noun_phrases.json")
  }
}
const hateCheckCases = (suiteDir: string) => path.join(externalDir(suiteDir), "HateCheck", "test_suite_cases.csv")
const hateCheckAnnotations = (suiteDir: string) => path.join(externalDir(suiteDir), "HateCheck", "test_suite_annotations.csv")
const boldPrompts = (suiteDir: string) => path.join(externalDir(suiteDir), "BOLD", "prompts")

const exists = (p: string) => fs.stat(p).then(() => true, () => false)

/** The file whose presence makes a suite available. */
const marker = (suite: ExternalSuiteName, suiteDir: string, version: string): string =>
  suite === "BOLD" ? boldPrompts(suiteDir) : suite === "HolisticBias" ? hbFiles(suiteDir, version).descriptors : suite === "HateCheck" ? hateCheckCases(suiteDir) : rtpFile(suiteDir)

const missingHint = (suite: ExternalSuiteName) =>
  suite === "RealToxicityPrompts"
    ? " (RealToxicityPrompts is not redistributed: import your own copy with `dart datasets import prompts.jsonl`)"
    : " (it is shipped with the repository: restore benchmark_suite/external/)"

/**
 * Loads the configured external suites from `{suite_dir}/external/` (docs/external-suites.md), sampled as
 * `spec.sampling` says; null suites = every one present. A bad file fails naming file and line.
 */
export const loadExternalSuites = Effect.fn("ExternalSuites.load")(function*(suiteDir: string, spec: ExternalSpec) {
  const present: Array<ExternalSuiteName> = []
  for (const s of externalSuiteOrder) {
    if (yield* Effect.promise(() => exists(marker(s, suiteDir, spec.holisticbias_version)))) present.push(s)
  }
  const wanted = spec.suites === null ? present : externalSuiteOrder.filter((s) => spec.suites!.includes(s))
  for (const s of wanted) {
    if (!present.includes(s)) {
      return yield* new DatasetError({ message: `external suite ${s} is configured but ${marker(s, suiteDir, spec.holisticbias_version)} does not exist${missingHint(s)}` })
    }
  }
  const out: Array<LoadedExternalSuite> = []
  for (const suite of wanted) {
    const sampling: SamplingSpec = { sampling: spec.sampling, seed: spec.seed, limit: spec.limits[suite] }
    out.push(yield* Effect.tryPromise({
      try: () => loadOne(suite, suiteDir, spec, sampling),
      catch: (e) =>
        e instanceof SuiteFormatError
          ? new DatasetError({ message: e.message })
          : new DatasetError({ message: `external suite ${suite}: ${(e as Error).message}`, cause: e })
    }))
  }
  return out
})

const loadOne = async (suite: ExternalSuiteName, suiteDir: string, spec: ExternalSpec, sampling: SamplingSpec): Promise<LoadedExternalSuite> => {
  const sources: Array<ExternalSource> = []
  const read = async (file: string): Promise<SuiteFile> => {
    const bytes = await fs.readFile(file)
    sources.push({ file, sha256: sha256Hex(bytes), bytes: bytes.length })
    return { file, text: bytes.toString("utf8") }
  }
  let rows: Array<ExternalRow>
  switch (suite) {
    case "BOLD": {
      const dir = boldPrompts(suiteDir)
      const names = (await fs.readdir(dir)).filter((n) => n.endsWith("_prompt.json")).sort()
      if (names.length === 0) throw new SuiteFormatError(`${dir}: no *_prompt.json files`)
      const files: Array<SuiteFile> = []
      for (const n of names) files.push(await read(path.join(dir, n)))
      rows = loadBold(files, sampling)
      break
    }
    case "HolisticBias": {
      const f = hbFiles(suiteDir, spec.holisticbias_version)
      rows = loadHolisticBias({
        descriptors: await read(f.descriptors),
        nouns: await read(f.nouns),
        templates: await read(f.templates),
        standalone: await read(f.standalone)
      }, sampling)
      break
    }
    case "HateCheck": {
      const cases = await read(hateCheckCases(suiteDir))
      const annotations = (await exists(hateCheckAnnotations(suiteDir))) ? await read(hateCheckAnnotations(suiteDir)) : undefined
      rows = loadHateCheck(cases, annotations, sampling)
      break
    }
    case "RealToxicityPrompts": {
      const file = rtpFile(suiteDir)
      const recordFile = rtpRecordFile(suiteDir)
      const f = await read(file)
      let record: RtpImportRecord
      try {
        record = Schema.decodeUnknownSync(RtpImportRecord)(JSON.parse(await fs.readFile(recordFile, "utf8")))
      } catch (e) {
        throw new SuiteFormatError(`${recordFile}: missing or unreadable (${(e as Error).message.split("\n")[0]}); import prompts.jsonl with \`dart datasets import\``)
      }
      const got = sources[sources.length - 1]!.sha256
      if (got !== record.sha256) {
        throw new SuiteFormatError(`${file}: sha256 ${got} is not the imported file's ${record.sha256} (${recordFile}); import it again with \`dart datasets import\``)
      }
      rows = loadRealToxicityPrompts(f.text, file, sampling)
      break
    }
  }
  return { suite, rows, sources }
}
