import { Schema } from "effect"
import { PyRandom } from "../PyRandom.ts"
import {
  decodeJsonFile,
  ensureUniqueIds,
  type ExternalRow,
  externalRow,
  ORIGINAL_SIZES,
  pySplit,
  pyStrip,
  type SamplingSpec,
  type SliceValue,
  stableTextHash,
  type SuiteFile,
  SuiteFormatError
} from "./ExternalSuite.ts"

const Descriptor = Schema.Union([
  Schema.String,
  Schema.Struct({
    descriptor: Schema.NonEmptyString,
    article: Schema.optionalKey(Schema.String),
    gender: Schema.optionalKey(Schema.String),
    preference: Schema.optionalKey(Schema.String)
  })
])
/** `descriptors.json`: `{axis: {bucket: [descriptor, …]}}`. */
const Descriptors = Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Array(Descriptor)))
/** `nouns.json`: `{female|male|neutral: [[singular, plural], …]}`. */
const Nouns = Schema.Record(Schema.String, Schema.Array(Schema.Tuple([Schema.NonEmptyString, Schema.NonEmptyString])))
/** `sentence_templates.json`: `{template: {constraints}}`. */
const Templates = Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Unknown))
const StandalonePhrase = Schema.Union([
  Schema.String,
  Schema.Struct({
    noun_phrase: Schema.NonEmptyString,
    plural_noun_phrase: Schema.optionalKey(Schema.String),
    preference: Schema.optionalKey(Schema.String)
  })
])
/** `standalone_noun_phrases.json`: `{axis: [phrase, …]}`, often with `{article} {noun}` slots. */
const Standalone = Schema.Record(Schema.String, Schema.Array(StandalonePhrase))

export interface HolisticBiasFiles {
  readonly descriptors: SuiteFile
  readonly nouns: SuiteFile
  readonly templates: SuiteFile
  readonly standalone: SuiteFile
}

const decodeAll = (f: HolisticBiasFiles) => {
  const templates = Object.keys(decodeJsonFile(f.templates, Templates))
  if (templates.length === 0) throw new SuiteFormatError(`${f.templates.file}:1: no templates`)
  const bad = templates.find((t) => !t.includes("{noun_phrase}") && !t.includes("{plural_noun_phrase}"))
  if (bad !== undefined) throw new SuiteFormatError(`${f.templates.file}:1: template ${JSON.stringify(bad)} has neither {noun_phrase} nor {plural_noun_phrase}`)
  return {
    descriptors: decodeJsonFile(f.descriptors, Descriptors),
    nouns: decodeJsonFile(f.nouns, Nouns),
    templates,
    standalone: decodeJsonFile(f.standalone, Standalone)
  }
}

/** The original's `_pluralize_naive` (last word only). */
const pluralizeNaive = (phrase: string): string => {
  const parts = pySplit(phrase)
  if (parts.length === 0) return pyStrip(phrase)
  const last = parts[parts.length - 1]!
  parts[parts.length - 1] = last.endsWith("y") && last.length > 1 && !"aeiou".includes(last[last.length - 2]!)
    ? `${last.slice(0, -1)}ies`
    : /(s|x|z|ch|sh)$/.test(last) ? `${last}es` : `${last}s`
  return parts.join(" ")
}

const fill = (template: string, singular: string, plural: string): string =>
  template.includes("{plural_noun_phrase}")
    ? template.replaceAll("{plural_noun_phrase}", plural).replaceAll("{noun_phrase}", singular)
    : template.replaceAll("{noun_phrase}", singular).replaceAll("{plural_noun_phrase}", plural)

/**
 * The original's `load_holisticbias`, bugs included: it expects `descriptors.json` to hold lists, so every axis
 * (a dict of buckets) falls through and only the axes of `standalone_noun_phrases.json` yield prompts, one per phrase
 * (capped at ⌊limit / 13⌋ per axis after a shuffle), each in a random template, `{article} {noun}` left unfilled.
 * One `random.Random(seed)` drives the shuffles and template choices, in sorted axis order.
 */
export const upstreamHolisticBias = (files: HolisticBiasFiles, spec: SamplingSpec): Array<ExternalRow> => {
  const { descriptors, standalone, templates } = decodeAll(files)
  const maxSamples = spec.limit ?? ORIGINAL_SIZES.HolisticBias!
  const axes = Object.keys(descriptors).sort()
  const cap = Math.max(1, Math.floor(maxSamples / axes.length))
  const rng = new PyRandom(spec.seed)
  let rows: Array<ExternalRow> = []
  for (const axis of axes) {
    const items = (standalone[axis] ?? []).map((x) =>
      typeof x === "string"
        ? { noun_phrase: x, plural_noun_phrase: pluralizeNaive(x) }
        : { noun_phrase: x.noun_phrase, plural_noun_phrase: x.plural_noun_phrase ?? pluralizeNaive(x.noun_phrase) }
    )
    // An axis without standalone phrases falls back to descriptors[axis], which is not a list: skipped, no draws.
    if (items.length === 0) continue
    rng.shuffle(items)
    for (const item of items.slice(0, Math.min(items.length, cap))) {
      const singular = pyStrip(item.noun_phrase)
      const plural = pyStrip(item.plural_noun_phrase) || pluralizeNaive(singular)
      if (singular === "") continue
      const template = templates[rng.randbelow(templates.length)]!
      const prompt = fill(template, singular, plural)
      rows.push(externalRow("HolisticBias", `HolisticBias:${axis}:${stableTextHash(prompt, 10)}`, prompt, "continuation", {
        axis,
        bucket: null,
        template,
        noun_phrase: singular,
        plural_noun_phrase: plural
      }))
    }
  }
  if (rows.length === 0) throw new SuiteFormatError(`${files.standalone.file}: no HolisticBias prompts generated`)
  if (rows.length > maxSamples) {
    rng.shuffle(rows)
    rows = rows.slice(0, maxSamples)
  }
  ensureUniqueIds(rows, "HolisticBias (upstream sampling)")
  return rows
}

interface Phrase {
  readonly singular: string
  /** null: the vocabulary gives no plural that agrees (a verb follows the noun); such a phrase takes singular templates only. */
  readonly plural: string | null
  readonly meta: Readonly<Record<string, SliceValue>>
}

const article = (word: string) => (/^[aeiou]/i.test(word) ? "an" : "a")
const PLACEHOLDER = /\{[^}]*\}/

/** Every noun phrase of one axis, grouped by bucket (`standalone` for the standalone phrases), in file order. */
const axisPhrases = (
  axis: string,
  buckets: Readonly<Record<string, ReadonlyArray<typeof Descriptor.Type>>>,
  nouns: Readonly<Record<string, ReadonlyArray<readonly [string, string]>>>,
  standalone: ReadonlyArray<typeof StandalonePhrase.Type>
): Array<readonly [string, Array<Phrase>]> => {
  const out: Array<readonly [string, Array<Phrase>]> = []
  const nounList = Object.entries(nouns).flatMap(([gender, list]) => list.map(([s, p]) => ({ gender, s, p })))
  for (const [bucket, list] of Object.entries(buckets)) {
    const phrases: Array<Phrase> = []
    for (const d of list) {
      const desc = typeof d === "string" ? { descriptor: d } : d
      for (const n of nounList) {
        // A gendered descriptor ("trans female", "Latina") goes with nouns of its gender or neutral ones.
        if (desc.gender !== undefined && n.gender !== desc.gender && n.gender !== "neutral") continue
        phrases.push({
          singular: `${desc.article ?? article(desc.descriptor)} ${desc.descriptor} ${n.s}`,
          plural: `${desc.descriptor} ${n.p}`,
          meta: { axis, bucket, descriptor: desc.descriptor, noun: n.s, noun_gender: n.gender, preference: desc.preference ?? null, source: "descriptor" }
        })
      }
    }
    out.push([bucket, phrases])
  }
  const phrases: Array<Phrase> = []
  for (const x of standalone) {
    const item = typeof x === "string" ? { noun_phrase: x } : x
    const plural = "plural_noun_phrase" in item && typeof item.plural_noun_phrase === "string" && item.plural_noun_phrase !== "" ? item.plural_noun_phrase : null
    const meta = { axis, bucket: "standalone", descriptor: null, preference: "preference" in item ? item.preference ?? null : null, source: "standalone" }
    if (item.noun_phrase.includes("{noun}")) {
      for (const n of nounList) {
        phrases.push({
          singular: item.noun_phrase.replaceAll("{article}", article(n.s)).replaceAll("{noun}", n.s),
          // The plural form has no article: "{article} {noun} who use wheelchairs" → "people who use wheelchairs".
          plural: plural === null ? null : plural.replaceAll("{article} ", "").replaceAll("{article}", "").replaceAll("{noun}", n.p),
          meta: { ...meta, noun: n.s, noun_gender: n.gender }
        })
      }
    } else {
      phrases.push({ singular: item.noun_phrase, plural, meta: { ...meta, noun: null, noun_gender: null } })
    }
  }
  if (phrases.length > 0) out.push(["standalone", phrases])
  return out
}

/** `total` spread over `n` strata as evenly as possible; the remainder goes to the strata `order` lists first. */
const spread = (total: number, sizes: ReadonlyArray<number>, order: ReadonlyArray<number>): Array<number> => {
  const quota = sizes.map(() => 0)
  let left = total
  // Rounds of one each over the strata that still have room, so a small stratum's shortfall moves to the others.
  while (left > 0) {
    const open = order.filter((i) => quota[i]! < sizes[i]!)
    if (open.length === 0) break
    const each = Math.max(1, Math.floor(left / open.length))
    for (const i of open) {
      if (left === 0) break
      const add = Math.min(each, sizes[i]! - quota[i]!, left)
      quota[i]! += add
      left -= add
    }
  }
  return quota
}

/**
 * HolisticBias generated properly: noun phrases from descriptor × noun over every axis and bucket (plus the standalone
 * phrases with their `{article} {noun}` slots filled), each in the sentence templates it fits; `limit` (1,000) prompts
 * stratified over the axes, then over each axis's buckets, drawn without replacement by a `random.Random(seed)`;
 * no prompt twice, no unfilled `{…}`, ids `HolisticBias:{axis}:{sha256(prompt)[:10]}`.
 */
export const fixedHolisticBias = (files: HolisticBiasFiles, spec: SamplingSpec): Array<ExternalRow> => {
  const { descriptors, nouns, standalone, templates } = decodeAll(files)
  const total = spec.limit ?? ORIGINAL_SIZES.HolisticBias!
  const rng = new PyRandom(spec.seed)
  const axes = [...new Set([...Object.keys(descriptors), ...Object.keys(standalone)])].sort()
  const strata = axes.map((axis) =>
    axisPhrases(axis, descriptors[axis] ?? {}, nouns, standalone[axis] ?? []).map(([bucket, phrases]) => {
      // Valid (phrase, template) pairs as phrase·T + template.
      const combos: Array<number> = []
      phrases.forEach((p, i) =>
        templates.forEach((t, j) => {
          if (p.plural !== null || !t.includes("{plural_noun_phrase}")) combos.push(i * templates.length + j)
        })
      )
      return { bucket, phrases, combos }
    })
  )
  const axisSizes = strata.map((buckets) => buckets.reduce((n, b) => n + b.combos.length, 0))
  const axisQuota = spread(total, axisSizes, axes.map((_, i) => i))
  const seen = new Set<string>()
  const rows: Array<ExternalRow> = []
  strata.forEach((buckets, a) => {
    const order = buckets.map((_, i) => i)
    rng.shuffle(order)
    const quota = spread(axisQuota[a]!, buckets.map((b) => b.combos.length), order)
    buckets.forEach((b, k) => {
      let taken = 0
      // Partial Fisher–Yates: a uniform draw without replacement; a prompt already made (same text) is passed over.
      for (let i = 0; i < b.combos.length && taken < quota[k]!; i++) {
        const j = i + rng.randbelow(b.combos.length - i)
        const pick = b.combos[j]!
        b.combos[j] = b.combos[i]!
        b.combos[i] = pick
        const phrase = b.phrases[Math.floor(pick / templates.length)]!
        const template = templates[pick % templates.length]!
        const prompt = fill(template, phrase.singular, phrase.plural ?? phrase.singular)
        if (seen.has(prompt) || PLACEHOLDER.test(prompt)) continue
        seen.add(prompt)
        taken++
        rows.push(externalRow("HolisticBias", `HolisticBias:${axes[a]}:${stableTextHash(prompt, 10)}`, prompt, "continuation", {
          ...phrase.meta,
          template,
          noun_phrase: template.includes("{plural_noun_phrase}") ? phrase.plural : phrase.singular
        }))
      }
    })
  })
  ensureUniqueIds(rows, "HolisticBias")
  return rows
}

export const loadHolisticBias = (files: HolisticBiasFiles, spec: SamplingSpec): Array<ExternalRow> =>
  spec.sampling === "upstream" ? upstreamHolisticBias(files, spec) : fixedHolisticBias(files, spec)
