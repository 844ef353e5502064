"""The model card (`README.md` of a model directory): Hugging Face front matter, labels, data, test results, how
to load it, intended use and limits. Rendered from what the run knows; written by `artifacts.write_model_dir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config
from pipeline.labels import LabelMap
from pipeline.redact import redact_text

LIBRARY = {"transformer": "transformers", "baseline": "sklearn", "ensemble": "sklearn"}
MEAN_POOLING_WARNING = ("plain `transformers.pipeline(\"text-classification\")` (or "
                        "`AutoModelForSequenceClassification` on its own) ignores the mean pooling and the Arabic "
                        "normaliser and gives wrong labels")


@dataclass(frozen=True)
class CardFacts:
    """What a finished run knows about its model directory."""

    kind: str
    name: str
    cfg: Config
    labels: LabelMap
    metrics: dict[str, Any]
    temperature: float
    data_report: dict[str, Any] | None = None
    data_sha256: str = ""
    run_id: str | None = None


def is_local(name_or_path: str) -> bool:
    """A local directory rather than a Hugging Face Hub id (the rule `model` loads by)."""
    return Path(name_or_path).exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1


def base_model(cfg: Config) -> tuple[str | None, str]:
    """The hub id for `base_model` (None for a local directory) and how the card names the backbone."""
    name = cfg.model.name_or_path.rstrip("/")
    if not is_local(name):
        return name, f"`{name}`"
    upstream = ""
    provenance = Path(name).expanduser() / "backbone.json"  # written by `pipeline backbone`
    if provenance.is_file():
        upstream = json.loads(provenance.read_text(encoding="utf-8")).get("model", "")
    return None, f"local directory `{Path(name).name}`" + (f", converted from `{upstream}`" if upstream else "")


def public_path(path: str) -> str:
    """A path as a card shows it: relative or `~/...` as given, another absolute path by its name only."""
    shown = redact_text(path)
    return Path(shown).name if shown.startswith("/") else shown


def front_matter(f: CardFacts) -> dict[str, Any]:
    """Hugging Face model card metadata: language, library, task, tags, base model, test metrics."""
    tags = ["arabic", "news", "topic-classification", "arabic-news-pipeline"]
    tags += {"transformer": [f"{f.cfg.model.pooling}-pooling"], "baseline": ["tfidf", f.cfg.baseline.classifier]}.get(
        f.kind, ["ensemble"])
    meta: dict[str, Any] = {"language": "ar", "library_name": LIBRARY[f.kind], "pipeline_tag": "text-classification",
                            "tags": tags}
    hub_id = base_model(f.cfg)[0] if f.kind == "transformer" else None
    if hub_id:
        meta["base_model"] = hub_id
    test = f.metrics.get("test") or {}
    if "accuracy" in test and "macro_f1" in test:
        meta["metrics"] = ["accuracy", "f1"]
        meta["model-index"] = [{"name": f.name, "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": f.cfg.data.name, "type": f.cfg.data.name, "split": "test"},
            "metrics": [{"type": "accuracy", "value": test["accuracy"], "name": "test accuracy"},
                        {"type": "f1", "value": test["macro_f1"], "name": "test macro-F1",
                         "args": {"average": "macro"}}]}]}]
    return meta


def pipeline_needs(f: CardFacts) -> list[str]:
    """Why this directory must be loaded through this pipeline; empty when plain `transformers` gives the same."""
    cfg, needs = f.cfg, []
    if f.kind == "ensemble":
        needs.append("`stack.joblib` combines the calibrated probabilities of the member models in `members/`, "
                     "each of which needs this pipeline too")
    elif f.kind == "baseline":
        needs.append("`model.joblib` is a scikit-learn pipeline over normalised text with labels as class indices; "
                     "`joblib.load` alone gives uncalibrated scores on raw text")
    elif cfg.model.pooling == "mean":
        needs.append("mean pooling: the classifier reads the mean of the token vectors, while transformers feeds it "
                     "the first-token pooler output; " + MEAN_POOLING_WARNING)
    if cfg.model.text_prefix and f.kind == "transformer":
        needs.append(f"every input starts with the prefix `{cfg.model.text_prefix}`")
    text = cfg.text.model_dump()
    steps = [k.replace("_", " ") for k, v in text.items() if v is True and k != "strip_boilerplate"]
    if steps:
        needs.append("texts are normalised before scoring (" + ", ".join(steps) + ")")
    learned = (f.data_report or {}).get("boilerplate_lines_learned", 0)
    if cfg.text.strip_boilerplate and learned:
        needs.append(f"{learned} boilerplate lines learned from the corpus are stripped (`boilerplate_lines.json`)")
    if f.kind == "transformer" and cfg.model.long_text != "head":
        how = ("its head and tail" if cfg.model.long_text == "head_tail"
               else f"up to {cfg.model.max_chunks} overlapping windows whose probabilities are averaged")
        needs.append(f"an article longer than {cfg.model.max_length} tokens is read as {how}")
    if abs(f.temperature - 1.0) > 1e-6:
        needs.append(f"confidences are calibrated with temperature {f.temperature:.3f} (fitted on validation)")
    if cfg.labels.mode == "multi":
        needs.append("multi-label: a sigmoid per label, and an article's labels are those at or above their "
                     "per-label thresholds (`thresholds.json`, tuned on validation), the argmax always among them")
    return needs


def _labels(f: CardFacts) -> list[str]:
    rows = ["| index | label | Arabic | definition |", "|---:|---|---|---|"]
    rows += [f"| {i} | `{lb}` | {f.labels.ar.get(lb, '')} | {f.labels.descriptions.get(lb, '')} |"
             for i, lb in enumerate(f.labels.ids)]
    return ["## Labels", "", f"{len(f.labels)} labels, one per article, in model order:", "", *rows, ""]


def _split_sizes(f: CardFacts) -> str:
    counts = (f.data_report or {}).get("label_counts")
    sizes = ({s: sum(c.values()) for s, c in counts.items()} if counts
             else {s: f.metrics[s]["n"] for s in ("validation", "test") if "n" in f.metrics.get(s, {})})
    return ", ".join(f"{split} {n}" for split, n in sizes.items()) or "unknown"


def _data(f: CardFacts) -> list[str]:
    d, report = f.cfg.data, f.data_report or {}
    paths = [d.path] if isinstance(d.path, str) else d.path
    lines = ["## Training data", "", f"- dataset `{d.name}`: {', '.join(f'`{public_path(p)}`' for p in paths)}",
             f"- prepared splits (articles): {_split_sizes(f)}; stratified, seed {d.split.seed}"]
    if report:
        lines.append(f"- rows read {report.get('rows_read')}, kept {report.get('rows_kept')}; duplicates removed "
                     f"{report.get('duplicates_removed')}, rows with conflicting labels removed "
                     f"{report.get('conflict_rows_removed')} (`data_report.json`)")
    if f.data_sha256:
        lines.append(f"- sha256 of the prepared splits (train, validation, test `.jsonl`): `{f.data_sha256}` (its "
                     "first 16 characters are the MLflow tag `dataset_hash`)")
    return [*lines, ""]


def _model(f: CardFacts) -> list[str]:
    cfg = f.cfg
    if f.kind == "ensemble":
        what = f"an ensemble of {len(f.metrics['ensemble']['members'])} models: {f.metrics['ensemble']['combiner']}"
    elif f.kind == "baseline":
        chosen = f.metrics.get("baseline", {}).get("C", "?")
        what = (f"TF-IDF over character {tuple(cfg.baseline.char_ngrams)} and word {tuple(cfg.baseline.word_ngrams)}"
                f" n-grams, {cfg.baseline.classifier} (C={chosen}, picked on validation macro-F1)")
    else:
        m, t = cfg.model, cfg.train
        what = (f"{base_model(cfg)[1]} fine-tuned: {m.pooling} pooling, {m.long_text} {m.max_length} tokens, "
                f"{t.epochs:g} epochs at learning rate {t.learning_rate:g}, best epoch by validation macro-F1")
    return ["## Model", "", f"{what}; temperature {f.temperature:.3f}.", ""]


def _results(f: CardFacts) -> list[str]:
    test, val = f.metrics.get("test") or {}, f.metrics.get("validation") or {}
    if "macro_f1" not in test:
        return ["## Test results", "", "No test metrics were recorded.", ""]
    ci = test.get("intervals") or {}
    lines = ["## Test results", "", f"On the test split ({test.get('n', '?')} articles; validation macro-F1 "
             f"{val.get('macro_f1', float('nan')):.3f}; in brackets the 95% bootstrap interval):", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {test[key]:.3f}{_ci(ci.get(key))} |" for key, name in (
        ("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_f1", "weighted-F1"),
        ("ece", "ECE (calibrated)"), ("ece_uncalibrated", "ECE (uncalibrated)"),
        ("multilabel_micro_f1", "all labels: micro-F1"), ("multilabel_macro_f1", "all labels: macro-F1"),
        ("subset_accuracy", "all labels: subset accuracy"), ("hamming_loss", "all labels: Hamming loss"))
        if key in test]
    lines += ["", "| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| `{lb}` | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f}"
              f"{_ci(ci.get('per_class_f1', {}).get(lb))} | {c['support']} |"
              for lb, c in test.get("per_class", {}).items()]
    paired = test.get("vs_baseline")
    if paired:
        lines += ["", f"Against the TF-IDF baseline `{paired['baseline']}` on the same test articles: macro-F1 "
                  f"{paired['macro_f1_diff']:+.3f}{_ci(paired.get('macro_f1_diff_interval'))}, paired bootstrap "
                  f"p = {paired.get('p_bootstrap', float('nan')):.3f}; {paired['only_a_right']} articles only this "
                  f"model got right, {paired['only_b_right']} only the baseline (McNemar p = "
                  f"{paired['p_mcnemar']:.3f})."]
    return [*lines, ""]


def _ci(bounds: list[float] | None) -> str:
    return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""


def _usage(f: CardFacts) -> list[str]:
    needs = pipeline_needs(f)
    head = (["**This directory needs this pipeline.** Load it with `pipeline predict` or the logged MLflow pyfunc, "
             "which apply everything below; plain `transformers` or `joblib` do not:", "", *[f"- {n}" for n in needs]]
            if needs else ["The weights load with plain `transformers` and give the same labels as `pipeline "
                           "predict`, whose output adds calibrated confidences and review flags."])
    registered = f.cfg.tracking.registered_model
    lines = ["## How to use", "", *head, "", "```bash",
             f"pipeline predict --model path/to/{f.name} --input articles.jsonl --output predictions.jsonl", "```", ""]
    if f.cfg.tracking.enabled and f.run_id:
        load = f'model = mlflow.pyfunc.load_model("runs:/{f.run_id}/model")'
        lines += ["```python", "import mlflow, pandas as pd", load + (f"  # a version of `{registered}`"
                                                                      if registered else ""),
                  'model.predict(pd.DataFrame({"text": ["..."]}))  # label, confidence, prob_<label>', "```", ""]
        if registered:
            lines += [f"`models:/{registered}@champion` loads the version that `pipeline promote` marked, which may "
                      "be another run's.", ""]
    else:
        lines += ["This run was not tracked, so no MLflow pyfunc was logged; from Python: "
                  f'`pipeline.scoring.load_scorer("path/to/{f.name}").predict_proba(texts)`.', ""]
    return lines


def _use_and_limits(f: CardFacts) -> list[str]:
    p = f.cfg.predict
    return ["## Intended use", "",
            f"Sorting Arabic news articles into the {len(f.labels)} topics above, in batch, with a person reviewing "
            f"the rows `pipeline predict` flags (`needs_review`: confidence below {p.threshold}, less than "
            f"{p.min_arabic_share:.0%} Arabic letters, or cut heavily).", "",
            "## Limits", "",
            f"- Trained and tested only on `{f.cfg.data.name}`; other sources, dialects, social media posts and "
            "periods were not evaluated. On a small test split one article moves a label's F1 a lot.",
            "- One label per article: an article on two topics gets the likelier one.",
            "- It does not judge truth, intent or threat; labels describe what an article reports.", ""]


def model_card(f: CardFacts) -> str:
    """The model card: YAML front matter, then the body in Markdown."""
    meta = yaml.safe_dump(front_matter(f), allow_unicode=True, sort_keys=False)
    what = {"transformer": "fine-tuned transformer", "baseline": "TF-IDF baseline", "ensemble": "ensemble"}[f.kind]
    run = f" in MLflow run `{f.run_id}`" if f.run_id else ""
    title = [f"# {f.name}", "", f"Arabic news topic classifier ({what}), written by `pipeline`{run}.", ""]
    body = title + _labels(f) + _data(f) + _model(f) + _results(f) + _usage(f) + _use_and_limits(f)
    return f"---\n{meta}---\n\n" + "\n".join(body)
