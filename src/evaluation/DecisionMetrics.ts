/** Confusion of YES/NO decisions with abstentions; YES is the positive class. */
export interface Confusion {
  tp: number
  tn: number
  fp: number
  fn: number
  abstain_yes: number
  abstain_no: number
}

export const emptyConfusion = (): Confusion => ({ tp: 0, tn: 0, fp: 0, fn: 0, abstain_yes: 0, abstain_no: 0 })

/** gold: 1 YES / 0 NO; pred: 1 YES / 0 NO / −1 abstain. */
export const addDecision = (c: Confusion, gold: number, pred: number) => {
  if (pred < 0) {
    if (gold === 1) c.abstain_yes++
    else c.abstain_no++
  } else if (gold === 1) {
    if (pred === 1) c.tp++
    else c.fn++
  } else if (pred === 1) c.fp++
  else c.tn++
}

export const mergeConfusion = (a: Confusion, b: Confusion): Confusion => ({
  tp: a.tp + b.tp,
  tn: a.tn + b.tn,
  fp: a.fp + b.fp,
  fn: a.fn + b.fn,
  abstain_yes: a.abstain_yes + b.abstain_yes,
  abstain_no: a.abstain_no + b.abstain_no
})

export interface DecisionMetrics {
  readonly n: number
  readonly accuracy: number | null
  readonly accuracy_on_parsed: number | null
  readonly equal_accuracy: number | null
  readonly difference_accuracy: number | null
  readonly yes_precision: number | null
  readonly pred_yes_rate: number | null
  readonly parse_ok_rate: number | null
  readonly macro_f1: number | null
  readonly balanced_accuracy: number | null
  readonly counts: { readonly tp: number; readonly tn: number; readonly fp: number; readonly fn: number; readonly abstain: number }
}

const ratio = (a: number, b: number) => (b === 0 ? null : a / b)

/**
 * docs/protocol.md §8 metrics. Abstentions count as wrong except in the "on parsed" metrics
 * (accuracy_on_parsed, yes_precision, pred_yes_rate, macro_f1, balanced_accuracy).
 * macro_f1 / balanced_accuracy follow scikit-learn: classes absent from both truth and
 * prediction (F1) or from truth (balanced accuracy) are left out; an undefined F1 is 0.
 */
export const decisionMetrics = (c: Confusion): DecisionMetrics => {
  const abstain = c.abstain_yes + c.abstain_no
  const parsed = c.tp + c.tn + c.fp + c.fn
  const n = parsed + abstain
  const goldYes = c.tp + c.fn + c.abstain_yes
  const goldNo = c.tn + c.fp + c.abstain_no

  const f1 = (tp: number, fp: number, fn: number) => (2 * tp + fp + fn === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn))
  const classes: Array<number> = []
  if (c.tp + c.fn + c.fp > 0) classes.push(f1(c.tp, c.fp, c.fn))
  if (c.tn + c.fp + c.fn > 0) classes.push(f1(c.tn, c.fn, c.fp))
  const recalls: Array<number> = []
  if (c.tp + c.fn > 0) recalls.push(c.tp / (c.tp + c.fn))
  if (c.tn + c.fp > 0) recalls.push(c.tn / (c.tn + c.fp))

  return {
    n,
    accuracy: ratio(c.tp + c.tn, n),
    accuracy_on_parsed: ratio(c.tp + c.tn, parsed),
    equal_accuracy: ratio(c.tn, goldNo),
    difference_accuracy: ratio(c.tp, goldYes),
    yes_precision: ratio(c.tp, c.tp + c.fp),
    pred_yes_rate: ratio(c.tp + c.fp, parsed),
    parse_ok_rate: ratio(parsed, n),
    macro_f1: classes.length === 0 ? null : classes.reduce((a, b) => a + b, 0) / classes.length,
    balanced_accuracy: recalls.length === 0 ? null : recalls.reduce((a, b) => a + b, 0) / recalls.length,
    counts: { tp: c.tp, tn: c.tn, fp: c.fp, fn: c.fn, abstain }
  }
}
