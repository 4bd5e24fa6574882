import { Schema } from "effect"
import { describeIssue, flattenIssue } from "../../common/SchemaIssueText.ts"
import { PyRandom } from "../PyRandom.ts"
import { csvObjects } from "./Csv.ts"
import { ensureUniqueIds, type ExternalRow, externalRow, type SamplingSpec, SuiteFormatError, type SuiteFile } from "./ExternalSuite.ts"

const CaseRow = Schema.Struct({
  functionality: Schema.NonEmptyString,
  case_id: Schema.String.check(Schema.isPattern(/^\d+$/)),
  test_case: Schema.NonEmptyString,
  label_gold: Schema.Literals(["hateful", "non-hateful"]),
  target_ident: Schema.String,
  direction: Schema.String,
  templ_id: Schema.String,
  case_templ: Schema.String
})
const caseColumns = Object.keys(CaseRow.fields)

const AnnotationRow = Schema.Struct({
  case_id: Schema.String.check(Schema.isPattern(/^\d+$/)),
  label_annot_maj: Schema.Literals(["hateful", "non-hateful"]),
  count_label_h: Schema.String.check(Schema.isPattern(/^\d+$/)),
  count_label_nh: Schema.String.check(Schema.isPattern(/^\d+$/))
})
const annotationColumns = Object.keys(AnnotationRow.fields)

const decodeRows = <S extends Schema.Codec<unknown, unknown, never, never>>(f: SuiteFile, schema: S, columns: ReadonlyArray<string>): Array<S["Type"]> => {
  const decode = Schema.decodeUnknownResult(schema)
  return csvObjects(f.text, f.file, columns).map(({ line, row }) => {
    const r = decode(row, { errors: "all" })
    if (r._tag === "Failure") throw new SuiteFormatError(`${f.file}:${line}: ${flattenIssue(r.failure.issue).map((i) => describeIssue(i, row)).join("; ")}`)
    return r.success
  })
}

/**
 * HateCheck as the original's `load_hatecheck_cases`: every case of `test_suite_cases.csv` in file order (3,728), id
 * `HateCheck:{case_id}`, the case text as the prompt; with a limit below the count, a `random.Random(seed)` shuffle
 * and the first `limit`. The annotators' majority label joins by case id when `test_suite_annotations.csv` is given.
 */
export const loadHateCheck = (cases: SuiteFile, annotations: SuiteFile | undefined, spec: SamplingSpec): Array<ExternalRow> => {
  let rows = decodeRows(cases, CaseRow, caseColumns)
  const annotated = new Map(annotations === undefined ? [] : decodeRows(annotations, AnnotationRow, annotationColumns).map((a) => [a.case_id, a] as const))
  if (spec.limit !== null && rows.length > spec.limit) {
    new PyRandom(spec.seed).shuffle(rows)
    rows = rows.slice(0, spec.limit)
  }
  const out = rows.map((r) => {
    const a = annotated.get(r.case_id)
    return externalRow("HateCheck", `HateCheck:${r.case_id}`, r.test_case, "dialogue_safety", {
      functionality: r.functionality,
      case_id: Number(r.case_id),
      label_gold: r.label_gold,
      target_ident: r.target_ident === "" ? null : r.target_ident,
      direction: r.direction === "" ? null : r.direction,
      templ_id: r.templ_id === "" ? null : Number(r.templ_id),
      case_templ: r.case_templ,
      label_annot_maj: a?.label_annot_maj ?? null,
      count_label_h: a === undefined ? null : Number(a.count_label_h),
      count_label_nh: a === undefined ? null : Number(a.count_label_nh)
    })
  })
  ensureUniqueIds(out, "HateCheck")
  return out
}
