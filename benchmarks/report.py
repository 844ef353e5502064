"""Render benchmarks/results/*.json as markdown tables, into benchmarks/results/RESULTS.md and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def accuracy_table(name: str, r: dict) -> str:
    """Baseline vs fine-tuned on one dataset's test split, with per-class F1."""
    rows = [("TF-IDF + logistic regression", r["baseline"])]
    if "lead" in r:
        rows.append(("TF-IDF of the title and lead (first 80 words)", r["lead"]))
    if "fine_tuned" in r:
        tuned = r["fine_tuned"]
        note = f" (trained on {tuned['subset']} articles)" if tuned.get("subset") else ""
        rows.append((f"e5-small fine-tuned, CPU{note}", tuned))
    if "ensemble" in r:
        rows.append((f"ensemble ({recipe_name(r.get('recipe')) or 'the recipe'}: baseline + e5-small)", r["ensemble"]))
    labels = list(rows[0][1]["per_class_f1"])
    head = "| model | accuracy | macro-F1 | weighted-F1 | ECE | " + " | ".join(labels) + " |"
    lines = [f"**{name}** (test split of {sum(r['data_report']['label_counts']['test'].values())} articles"
             f"{'; 95% bootstrap intervals in brackets' if rows[0][1].get('intervals') else ''})", "",
             head, "|---" * (5 + len(labels)) + "|"]
    for label, m in rows:
        ci = m.get("intervals") or {}
        cells = [f"{m[k]:.3f}{interval(ci.get(k), 3)}" for k in ("accuracy", "macro_f1")]
        cells += [f"{m[k]:.3f}" for k in ("weighted_f1", "ece")]
        cells += [f"{m['per_class_f1'][lb]:.2f}{interval(ci.get('per_class_f1', {}).get(lb), 2)}" for lb in labels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    paired = [(label, m["vs_baseline"]) for label, m in rows[1:] if m.get("vs_baseline")]
    if paired:
        diffs = [f"{label} {d['macro_f1_diff']:+.3f}{interval(d.get('macro_f1_diff_interval'), 3)} (paired "
                 f"bootstrap p {pvalue(d['p_bootstrap'])}, McNemar p {pvalue(d['p_mcnemar'])})" for label, d in paired]
        lines.append("\nMacro-F1 minus the baseline's on the same test articles: " + "; ".join(diffs) + ".")
    if r.get("ensemble", {}).get("combiner"):
        lines.append(f"\nThe ensemble's combiner, chosen on validation: {r['ensemble']['combiner']}.")
    if "fine_tuned" in r and r["fine_tuned"].get("settings"):
        minutes = (r["fine_tuned"].get("train_seconds") or 0) / 60
        lines.append(f"\nFine-tuned: {r['fine_tuned']['settings']}; {minutes:.0f} min of training on 2 CPU cores.")
    cv = r.get("baseline_cv")
    if cv:
        pooled = (f"; pooled over the out-of-fold predictions of all {cv['rows']} articles "
                  f"{cv['pooled_macro_f1']:.3f}{interval(cv['pooled_intervals']['macro_f1'], 3)}"
                  if "pooled_intervals" in cv else "")
        lines.append(f"\nBaseline {cv['folds']}-fold cross-validation macro-F1: {cv['macro_f1_mean']:.3f} "
                     f"± {cv['macro_f1_std']:.3f} (mean ± sd over folds){pooled}.")
    return "\n".join(lines)


def pvalue(p: float) -> str:
    """A p-value as a reader wants it: `= 0.042`, or `< 0.001` where the bootstrap saw no reversal."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def bare_p(p: float) -> str:
    """A p-value inside brackets that already say what it is: `0.042`, or `< 0.001`."""
    return pvalue(p).removeprefix("= ")


def recipe_name(version: str | None) -> str:
    """`recipe 4` from a recipe VERSION string (`4: baseline + e5-small, …`); empty for results that carry none."""
    return f"recipe {version.split(':')[0]}" if version else ""


def interval(bounds: list[float] | None, digits: int) -> str:
    """` [low, high]`, or nothing for results computed before intervals were reported."""
    return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]" if bounds else ""


def pretrained(record: dict) -> str:
    """`e5-small pretrained on 3,999 unlabelled articles (NAME)`: the backbone a variant fine-tuned, from its record."""
    return f"e5-small pretrained on {record['articles']:,} unlabelled articles ({Path(record['backbone']).name})"


def transfer_table(r: dict) -> str:
    """Leave-source-out: trained without an outlet, tested on it."""
    models = [(k, t) for k, t in (("lead", "TF-IDF of title + lead"), ("fine_tuned", "e5-small fine-tuned"),
                                  ("ensemble", "ensemble"))
              if any(k in s for s in r["sources"])]
    paired = {k for k, _ in models if any((s.get(k) or {}).get("vs_baseline") for s in r["sources"])}
    combined = any((s.get("ensemble") or {}).get("combiner") for s in r["sources"])
    head = "| left-out source | test articles | TF-IDF baseline macro-F1 |" + "".join(
        f" {t} macro-F1 |" + (f" {t} − baseline [95% CI] (paired bootstrap p, McNemar p) |" if k in paired else "")
        for k, t in models) + (" ensemble's members, chosen on validation |" if combined else "")
    source = (f", {pretrained(r['pretrain'])}, which may have read unlabelled articles of the left-out outlet, never "
              "its test articles" if r.get("pretrain") else "")
    lines = [f"**Transfer to an unseen outlet{source}** (security corpus, {r['rows']} articles; each source left out "
             "of training in turn; 95% bootstrap intervals in brackets; labels the left-out source lacks are not "
             "averaged)", "", head,
             "|---|---:|---:|" + "".join("---:|---:|" if k in paired else "---:|" for k, _ in models)
             + ("---|" if combined else "")]
    for s in r["sources"]:
        b = s["baseline"]
        cells = [s["source"], str(b["n"]), f"{b['macro_f1']:.3f}{interval(b['macro_f1_ci'], 3)}"]
        for key, _ in models:
            t = s.get(key)
            cells.append(f"{t['macro_f1']:.3f}{interval(t['macro_f1_ci'], 3)}" if t else "not run")
            if key in paired:
                cells.append(paired_cell((t or {}).get("vs_baseline")))
        if combined:
            chosen = members((s.get("ensemble") or {}).get("combiner") or "")
            recipe = recipe_name(s.get("recipe"))
            cells.append(f"{chosen} ({recipe})" if chosen and recipe else chosen)
        lines.append("| " + " | ".join(cells) + " |")
    flags = f"--backbone {r['pretrain']['backbone']} " if r.get("pretrain") else ""
    return "\n".join(lines + pooled_row(r.get("pooled"), models, paired, combined, flags))


def paired_cell(vs: dict | None) -> str:
    """`+0.044 [0.022, 0.064] (p bootstrap, p McNemar)`: a model against the baseline; empty where not tested."""
    if not vs:
        return ""
    ps = [bare_p(vs[k]) for k in ("p_bootstrap", "p_mcnemar") if k in vs]
    return f"{vs['macro_f1_diff']:+.3f}{interval(vs.get('macro_f1_diff_interval'), 3)} ({', '.join(ps)})"


def pooled_row(pool: dict | None, models: list[tuple[str, str]], paired: set[str], combined: bool,
               flags: str = "") -> list[str]:
    """The transfer table's last row, every left-out source's articles pooled, and its per-label F1."""
    if not pool or len(pool["sources"]) < 2:  # one source's row says it all
        return []
    cells = [f"all {len(pool['sources'])} pooled", str(pool["rows"])]
    for key in ["baseline", *(k for k, _ in models)]:
        t = pool.get(key)
        cells.append(f"{t['pooled_macro_f1']:.3f}{interval(t['pooled_intervals']['macro_f1'], 3)}" if t else "")
        if key in paired:
            cells.append(paired_cell((t or {}).get("vs_baseline")))
    cells += [recipe_name(pool.get("recipe"))] if combined else []
    by = {k: pool[k]["pooled_per_class_f1"] for k in ("baseline", "ensemble") if k in pool}
    return ["| " + " | ".join(cells) + " |", "",
            f"The last row pools the {pool['rows']} articles of {', '.join(pool['sources'])}, each scored by the "
            "models trained without its outlet, into one paired test (`python benchmarks/transfer.py "
            f"{flags}--summary-only`)." + ("" if len(by) < 2 else " Per label, ensemble (baseline): " + "; ".join(
                f"{lb} {f:.2f} ({by['baseline'][lb]:.2f})" for lb, f in by["ensemble"].items()) + ".")]


def members(combiner: str) -> str:
    """`baseline + fine-tune` (mean), `fine-tune alone`, … from an ensemble's combiner description."""
    names = [n.strip() for n in combiner.split(":")[-1].replace(" alone", "").split(",") if n.strip()]
    short = ["title + lead" if "-tfidf-" in n and "-lead" in n else "baseline" if "-tfidf-" in n  # a dataset's name
             else "fine-tune" if "e5" in n or "bert" in n else n for n in names]                  # may say e5 too
    return " + ".join(short) + (" alone" if len(short) == 1 else " (mean)") if short else ""


def cv_table(r: dict) -> str:
    """The recipe's k-fold cross-validation: the baseline, the recipe's members and ensembles on the same folds."""
    names = {"baseline": "TF-IDF + logistic regression (the baseline)",
             "lead": "TF-IDF of the title and lead (first 80 words)", "fine_tuned": "e5-small fine-tuned, CPU",
             "tfidf_pair": "ensemble of the two TF-IDF models",
             "with_lead": "ensemble of baseline + lead + e5-small", "ensemble": "ensemble (baseline + e5-small)"}
    labels = r["labels"]
    k, done = r.get("k", len(r["folds"])), len(r["folds"])
    which = f"{k}-fold" if done == k else f"{done} of the {k} folds of a {k}-fold"
    recipe = recipe_name(r.get("recipe"))
    lines = [f"**Security corpus, {which} cross-validation of the recipe** ({recipe + ', ' if recipe else ''}folds "
             f"drawn with seed {r['fold_seed']}; {r['rows']} articles, each tested once; mean ± sd over folds, then "
             "pooled out-of-fold figures with 95% bootstrap intervals)",
             "", "| model | macro-F1 per fold, mean ± sd | pooled macro-F1 | "
             "− baseline (paired bootstrap p, McNemar p) | " + " | ".join(labels) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(labels)]
    for key, label in names.items():
        m = r.get(key)
        if not m:
            continue
        ci = m["pooled_intervals"]
        vs = m.get("vs_baseline")
        cells = [label, f"{m['macro_f1_mean']:.3f} ± {m['macro_f1_std']:.3f}",
                 f"{m['pooled_macro_f1']:.3f}{interval(ci.get('macro_f1'), 3)}",
                 f"{vs['macro_f1_diff']:+.3f}{interval(vs.get('macro_f1_diff_interval'), 3)} "
                 f"(p {pvalue(vs['p_bootstrap'])}, {bare_p(vs['p_mcnemar'])})" if vs else ""]
        cells += [f"{m['pooled_per_class_f1'][lb]:.2f}{interval(ci.get('per_class_f1', {}).get(lb), 2)}"
                  for lb in labels]
        lines.append("| " + " | ".join(cells) + " |")
    chosen = [members(c.get("combiner") or "") for c in r.get("combiners") or []]
    if chosen:
        lines.append("\nThe ensemble's choice on each fold's validation: "
                     + "; ".join(f"{c}: {chosen.count(c)} of {len(chosen)}" for c in dict.fromkeys(chosen)) + ".")
    if r.get("by_label_confidence"):
        lines.append(confidence_table(r))
    return "\n".join(lines)


def seeds_table(r: dict) -> str:
    """The recipe on the fixed split, the fine-tune retrained with each seed: figures per seed, then mean ± sd."""
    seeds, summ = r["seeds"], r["summary"]
    weakest = summ["ensemble"]["weakest_label"]
    source = f", {pretrained(r['pretrain'])}" if r.get("pretrain") else ""
    lines = [f"**Security corpus, fixed split, {len(seeds)} training seed{'s' * (len(seeds) != 1)}{source}** (the "
             "split and the baseline fixed, "
             f"baseline macro-F1 {summ['baseline_macro_f1']:.3f}; e5-small fine-tuned again with each seed and "
             "stacked with the baseline; paired bootstrap p against the baseline in brackets)", "",
             "| seed | e5-small fine-tuned macro-F1 | − baseline | ensemble macro-F1 | − baseline | "
             f"ensemble's members | ensemble {weakest} F1 | mean of both members, no choice: validation, test, "
             "− baseline |", "|---|---:|---:|---:|---:|---|---:|---:|"]

    def gain(m: dict) -> str:
        vs = m["vs_baseline"]
        return f"{vs['macro_f1_diff']:+.3f} ({bare_p(vs['p_bootstrap'])})"

    def both(row: dict) -> str:
        m = row.get("mean_of_members")
        return f"{m['validation_macro_f1']:.3f}, {m['test_macro_f1']:.3f}, {gain(m)}" if m else ""

    for seed, row in seeds.items():
        f, e = row["fine_tuned"], row["ensemble"]
        lines.append(f"| {seed} | {f['macro_f1']:.3f}{interval((f.get('intervals') or {}).get('macro_f1'), 3)} | "
                     f"{gain(f)} | {e['macro_f1']:.3f}{interval((e.get('intervals') or {}).get('macro_f1'), 3)} | "
                     f"{gain(e)} | {members(e['combiner'])} | {e['per_class_f1'][weakest]:.2f} | {both(row)} |")
    f, e, m = summ["fine_tuned"], summ["ensemble"], summ.get("mean_of_members")
    lines.append(f"| mean ± sd | {f['macro_f1_mean']:.3f} ± {f['macro_f1_std']:.3f} | {f['gain_mean']:+.3f} ± "
                 f"{f['gain_std']:.3f} | {e['macro_f1_mean']:.3f} ± {e['macro_f1_std']:.3f} | {e['gain_mean']:+.3f} "
                 f"± {e['gain_std']:.3f} | | {e['per_class_f1_mean'][weakest]:.2f} | "
                 + (f"− baseline {m['gain_mean']:+.3f} ± {m['gain_std']:.3f} |" if m else " |"))
    lines.append(f"\nThe ensemble is ahead of the baseline at p < 0.05 with {e['significant']} of {e['seeds']} seeds "
                 f"(gain {e['gain_min']:+.3f} to {e['gain_max']:+.3f}); the fine-tune alone with {f['significant']}"
                 + (f"; the mean of both members with {m['significant']}" if m else "") + ".")
    rows = [row["mean_of_members"]["criteria"] for row in seeds.values()
            if "criteria" in row.get("mean_of_members", {})]
    if rows:
        lines.append("\n" + criteria_line(rows))
    return "\n".join(lines)


def criteria_line(rows: list[dict]) -> str:
    """How steadily each criterion of the ensemble picks its candidate on resamples of validation, over seeds."""
    def span(values: list[float], fmt: str) -> str:
        low, high = min(values), max(values)
        return format(low, fmt) if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}} to {high:{fmt}}"

    from pipeline.ensemble import CRITERIA

    parts = []
    for criterion, name in CRITERIA.items():
        shares = [100 * r[criterion]["picks"].get("mean", 0) / r[criterion]["resamples"] for r in rows]
        parts.append(f"{name} picks the mean of both members in {span(shares, '.0f')}% of them (its gain over the "
                     f"best member alone {span([r[criterion]['mean_gain'] for r in rows], '+.3f')}, sd "
                     f"{span([r[criterion]['mean_gain_sd'] for r in rows], '.3f')})")
    return (f"On {rows[0]['log_loss']['resamples']} bootstrap resamples of validation (nothing from test), with each "
            f"of the {len(rows)} seeds: " + "; ".join(parts) + ".")


def previous_cv(r: dict) -> str:
    """One line on the previous recipe's cross-validation, the one the current recipe replaced."""
    e, f = r["ensemble"], r["fine_tuned"]
    vs = e["vs_baseline"]
    alone = sum("alone" in (c.get("combiner") or "") for c in r["combiners"])
    return (f"Previous recipe, same folds (`security-cv-v1.json`): baseline + e5-small, combiner fitted on "
            f"validation (weights or logistic regression, cross-validated): ensemble {e['macro_f1_mean']:.3f} ± "
            f"{e['macro_f1_std']:.3f}, fine-tune alone {f['macro_f1_mean']:.3f} ± {f['macro_f1_std']:.3f}; "
            f"{vs['macro_f1_diff']:+.3f}{interval(vs.get('macro_f1_diff_interval'), 3)} over the baseline "
            f"(p = {vs['p_bootstrap']:.3f}). The fitted combiner kept one member alone in {alone} of "
            f"{len(r['combiners'])} folds.")


def variant_table(r: dict) -> str:
    """A pretrained variant of the recipe (cv_recipe.py --pretrain-epochs: a pretraining per fold; --backbone: one
    backbone for every fold) against the plain recipe on the same folds."""
    from cv_recipe import SEED

    a, seed = r["against_plain"], r["fold_seed"]
    folds = (f"all {r['k']} folds drawn with seed {seed}" if len(a["folds"]) == r["k"] else
             f"folds {', '.join(map(str, a['folds']))} of {r['k']} drawn with seed {seed} so far")
    flag = "" if seed == SEED else f" --fold-seed {seed}"
    if "pretrain_epochs" in r:
        steps = ", ".join(str(p["steps"]) for p in r["pretrain"])
        head = (f"**Task-adaptive pretraining, cross-validated** (`python benchmarks/cv_recipe.py --pretrain-epochs "
                f"{r['pretrain_epochs']:g}{flag}`; {folds}; e5-small pretrained on each fold's training "
                f"articles alone ({steps} steps), then the recipe")
    else:
        b = r["pretrain"][0]
        source, n = b.get("input", {}), b["left_out"]["articles"]
        copies = f"{n} {'copy' if n == 1 else 'copies'}"
        head = (f"**Domain-adaptive pretraining, cross-validated** (`python benchmarks/cv_recipe.py --backbone "
                f"{b['backbone']}{flag}`; {folds}; e5-small pretrained once on {b['articles']} unlabelled "
                f"articles{' of ANT ' + ' and '.join(source['sections']) if source.get('sections') else ''} "
                f"({b['steps']} steps; {copies} of security-corpus articles left out), "
                f"then {recipe_name(r.get('recipe')) or 'the recipe'} on every fold")
    lines = [f"{head}; against the plain recipe on the same articles)", "",
             "| model | plain, mean by fold | pretrained, mean by fold | pretrained − plain, pooled [95% CI] "
             "(p bootstrap, McNemar) | pretrained − baseline, pooled |", "|---|---:|---:|---:|---:|"]
    if "macro_f1_mean" in r.get("baseline", {}):  # the same baseline on the same folds in both
        lines.append(f"| TF-IDF baseline (the same in both) | {r['baseline']['macro_f1_mean']:.3f} | "
                     f"{r['baseline']['macro_f1_mean']:.3f} | | |")
    for m, name in (("fine_tuned", "e5-small fine-tune"), ("ensemble", "ensemble (baseline + e5-small)")):
        lines.append(f"| {name} | {a[m]['plain_macro_f1_mean']:.3f} | {a[m]['macro_f1_mean']:.3f} | "
                     f"{paired_cell(a[m]['vs_plain'])} | {paired_cell(r.get(m, {}).get('vs_baseline'))} |")
    ens = r.get("ensemble", {})
    if ens.get("pooled_per_class_f1"):
        bounds = ens.get("pooled_intervals", {}).get("per_class_f1", {})
        cells = [f"{lb} {f:.2f}{interval(bounds.get(lb), 2)}" for lb, f in ens["pooled_per_class_f1"].items()]
        lines.append(f"\nPer label, the pretrained ensemble pooled over these folds ({r['rows']} articles): "
                     f"{'; '.join(cells)}.")
    if r.get("by_label_confidence"):
        lines.append(confidence_table(r))
    if a.get("plain_from"):
        older = recipe_name(a.get("plain_recipe"))
        which = f", of {older} (its fine-tune is the same as this one, its ensemble is {older}'s)" if older else ""
        lines.append(f"\nThe plain recipe's figures are its per-fold macro-F1 in `{a['plain_from']}`{which}: its "
                     "folds ran before fold records were kept, so there is no paired test against it.")
    return "\n".join(lines)


def confidence_table(r: dict) -> str:
    """A cross-validation's pooled figures by the annotators' confidence in the label (cv_recipe.by_confidence),
    with the label the ensemble pooled over every article does worst on; empty when none are recorded."""
    levels = r.get("by_label_confidence")
    if not levels:
        return ""
    first = next(iter(levels.values()))
    pooled_f1 = r.get("ensemble", {}).get("pooled_per_class_f1", {})
    weakest = min(first["support"], key=lambda lb: pooled_f1.get(lb, 1.0))
    models = [(m, n) for m, n in (("baseline", "baseline"), ("fine_tuned", "fine-tune"), ("ensemble", "ensemble"))
              if m in first]
    lines = ["\nBy the annotators' confidence in the label (pooled over the folds; `low`: two annotators disagreed)",
             "", f"| confidence | articles | {weakest} articles | "
             + " | ".join(f"{n} macro-F1" for _, n in models) + " | "
             + " | ".join(f"{n}: {weakest} F1" for _, n in models) + " |",
             "|---|---:|---:|" + "---:|" * (2 * len(models))]
    for level, v in levels.items():
        lines.append(f"| {level} | {v['rows']} | {v['support'][weakest]} | "
                     + " | ".join(f"{v[m]['macro_f1']:.3f}" for m, _ in models) + " | "
                     + " | ".join(f"{v[m]['per_class_f1'][weakest]:.2f}" for m, _ in models) + " |")
    return "\n".join(lines)


def offsets_table(r: dict) -> str:
    """The recipe's ensemble with and without count-matched label offsets, recombined from kept probabilities."""
    rows = [("cross-validation folds", r.get("cv"))]
    rows += [(f"cross-validation, folds drawn with seed {p['fold_seed']} ({', '.join(s['name'] for s in p['sets'])}"
              " so far)", p) for p in r.get("cv_partitions", [])]
    rows += [(f"left-out sources ({', '.join(s['name'] for s in r['transfer']['sets'])})" if r.get("transfer") else "",
              r.get("transfer"))]
    rows += [(f"fixed split, {f['sets'][0]['name']}", f) for f in r.get("fixed", [])]
    lines = [f"**Label offsets on the ensemble's members** (`train.ensemble_offsets: count_match`; `python "
             f"benchmarks/offsets.py --backbone models/pretrained/{r['variant']}`: the same members' kept "
             "probabilities combined both ways; offsets fitted on validation; lowest label F1 in brackets)", "",
             "| articles of | n | baseline | ensemble | ensemble, count-matched | count-matched − ensemble [95% CI] "
             "(p bootstrap, McNemar) | count-matched − baseline |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, x in rows:
        if not x:
            continue
        cells = []
        for k in ("baseline", "none", "count_match"):
            f1 = x[k]["pooled_per_class_f1"]
            weakest = min(f1, key=f1.get)
            cells.append(f"{x[k]['pooled_macro_f1']:.3f} ({weakest} {f1[weakest]:.2f})")
        lines.append(f"| {name} | {x['rows']} | {' | '.join(cells)} | {paired_cell(x['count_match']['vs_none'])} | "
                     f"{paired_cell(x['count_match'].get('vs_baseline'))} |")
    return "\n".join(lines)


def splits_table(r: dict) -> str:
    """The demo recipe against the baseline on several seeded splits of the sample corpus."""
    lines = [f"**Sample corpus, {len(r['splits'])} seeded splits** (`{r['config']}`, test splits of "
             f"{r['splits'][0]['test_size']} articles; validation macro-F1 in brackets)", "",
             "| split seed | TF-IDF baseline | e5-small fine-tuned | errors (baseline / fine-tuned) |",
             "|---|---:|---:|---:|"]
    for s in r["splits"]:
        b, t = s["baseline"], s["fine_tuned"]
        lines.append(f"| {s['seed']} | {b['test']:.3f} ({b['validation']:.3f}) | {t['test']:.3f} "
                     f"({t['validation']:.3f}) | {s['baseline_errors']} / {s['fine_tuned_errors']} |")
    p = r["pooled"]
    lines.append(f"| mean ± sd | {p['baseline_mean']:.3f} ± {p['baseline_std']:.3f} | {p['fine_tuned_mean']:.3f} "
                 f"± {p['fine_tuned_std']:.3f} | |")
    lines.append(f"\nFine-tuned better on {p['fine_tuned_wins']} splits, tied on {p['ties']}, worse on "
                 f"{p['baseline_wins']}. Articles only the baseline got wrong: {p['only_baseline_wrong']}; only the "
                 f"fine-tuned model: {p['only_fine_tuned_wrong']} (exact McNemar p = {p['mcnemar_p']:.3f}).")
    return "\n".join(lines)


def plain_first(stem: str) -> list[Path]:
    """The results files `stem`.json (the plain recipe's) and `stem`-*.json (other versions, variants), that order."""
    return sorted(RESULTS.glob(f"{stem}*.json"), key=lambda path: (path.stem != stem, path.name))


def render() -> str:
    """All available results as markdown."""
    parts = []
    for key, title in (("security", "Security taxonomy (7 labels)"), ("ant", "ANT topics (6 labels)")):
        path = RESULTS / f"{key}.json"
        if path.is_file():
            parts.append(accuracy_table(title, json.loads(path.read_text())))
    partitions = sorted(RESULTS.glob("security-cv-seed*.json"), reverse=True)  # replications on other partitions
    for path in [p for p in partitions if re.fullmatch(r"security-cv-seed\d+\.json", p.name)]:
        parts.append(cv_table(json.loads(path.read_text())))
    path = RESULTS / "security-cv.json"
    if path.is_file():
        parts.append(cv_table(json.loads(path.read_text())))
    path = RESULTS / "security-cv-v1.json"
    if path.is_file():
        parts.append(previous_cv(json.loads(path.read_text())))
    for path in sorted(RESULTS.glob("security-cv*.json")):
        if (variant := json.loads(path.read_text())).get("against_plain"):
            parts.append(variant_table(variant))
    for path in plain_first("security-seeds"):
        seeds = json.loads(path.read_text())
        if seeds.get("summary") and (path.name == "security-seeds.json" or seeds.get("pretrain")):
            parts.append(seeds_table(seeds))
    for path in plain_first("security-transfer"):
        parts.append(transfer_table(json.loads(path.read_text())))
    for path in sorted(RESULTS.glob("security-offsets-*.json")):
        parts.append(offsets_table(json.loads(path.read_text())))
    path = RESULTS / "sample_splits.json"
    if path.is_file():
        parts.append(splits_table(json.loads(path.read_text())))
    path = RESULTS / "predict_throughput.json"
    if path.is_file():
        import importlib.util

        spec = importlib.util.spec_from_file_location("pt", ROOT / "benchmarks" / "predict_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        t = json.loads(path.read_text())
        parts.append(f"**Predictor throughput** ({t['model']}, {t['docs']} real articles, batch {t['batch_size']}, "
                     f"{t['threads']} threads, truncation `{t['truncation']}` at {t['max_length']} tokens)\n\n"
                     + module.table(t))
        other = RESULTS / "predict_throughput-avx2.json"
        if other.is_file():
            avx2 = json.loads(other.read_text())
            t.setdefault("cpu_class", "AVX-512+VNNI+bf16")
            t.setdefault("label", "the machine of the table above")
            parts.append("**Speed-up over the reference per CPU class** (label agreement in brackets where "
                         f"measured; AVX2: {avx2['source']})\n\n" + module.cpu_table([t, avx2]))
    return "\n\n".join(parts)


def main() -> None:
    """Write RESULTS.md and replace the README section between the result markers."""
    text = render()
    (RESULTS / "RESULTS.md").write_text(text + "\n", encoding="utf-8")
    readme = ROOT / "README.md"
    content = readme.read_text(encoding="utf-8")
    if START in content:
        content = re.sub(f"{START}.*{END}", f"{START}\n{text}\n{END}", content, flags=re.S)
        readme.write_text(content, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
