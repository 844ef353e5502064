"""`pipeline review`: the queue picks what each strategy promises, is a file a person can fill in, and a filled queue
flows back through `prepare` into training."""

import csv
import gzip
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import COMMON, LABEL_WORDS, LABELS, ROOT, base_overrides, make_corpus, write_jsonl
from scipy.stats import entropy as scipy_entropy

from pipeline.baseline import BaselineScorer, train_baseline
from pipeline.cli import main
from pipeline.config import DedupConfig, load_config
from pipeline.data import REPORT_FILE, load_split, prepare
from pipeline.dedup import SOURCE_KEY, deduplicate
from pipeline.errors import DataError
from pipeline.review import Pool, ReviewJob, review

MARKER = "علامةالمراجعة"  # a word only the reviewed rows hold
QUEUE_COLUMNS = ["id", "title", "lead", "predicted_label", "confidence", "margin", "entropy", "top3", "label", "text"]


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory, corpus):
    """A TF-IDF baseline on the fixture corpus: (model directory, corpus file, root)."""
    root = tmp_path_factory.mktemp("review")
    corpus_file = write_jsonl(root / "corpus.jsonl", corpus)
    cfg = load_config(overrides=base_overrides(root, corpus_file))
    prepare(cfg)
    return train_baseline(cfg).model_dir, corpus_file, root


def _mixed(rng: random.Random, a: str, b: str, words: int = 40) -> list[str]:
    """An article half about label a, half about label b: the model hesitates between them."""
    return [rng.choice(LABEL_WORDS[a] if i % 2 else LABEL_WORDS[b]) for i in range(words)]


@pytest.fixture(scope="module")
def dump() -> list[dict]:
    """Four two-topic stories told six times each with one word changed (near-identical, uncertain), three-topic
    articles, confident single-topic articles, and rows the predictor refuses."""
    rng = random.Random(3)
    rows = []
    for story in range(4):
        words = _mixed(rng, LABELS[story], LABELS[story + 1])
        for copy in range(6):
            variant = list(words)
            variant[copy * 3] = rng.choice(COMMON)
            rows.append({"url": f"story{story}-{copy}", "title": "", "text": " ".join(variant)})
    for k in range(3):  # three topics at once: the highest entropy, though not the smallest margin
        topics = rng.sample(LABELS, 3)
        rows.append({"url": f"mix3-{k}", "title": "", "text": " ".join(rng.choice(LABEL_WORDS[topics[i % 3]])
                                                                       for i in range(45))})
    rows += [{"url": f"solo-{r['id']}", "title": r["title"], "text": r["text"]} for r in make_corpus(3, seed=9)]
    rng.shuffle(rows)
    return [*rows, {"url": "empty", "title": "", "text": "   "}, {"url": "english", "title": "",
                                                                 "text": "An article in English only, no Arabic."}]


@pytest.fixture(scope="module")
def dump_file(tmp_path_factory, dump) -> Path:
    path = write_jsonl(tmp_path_factory.mktemp("dump") / "dump.jsonl", dump)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    return path


def _queue(model, dump_file, out: Path, n: int, strategy: str, *extra: str) -> list[dict]:
    rc = main(["review", "--model", str(model), "--input", str(dump_file), "--output", str(out), "--n", str(n),
               "--strategy", strategy, "--id-field", "url", "--quiet", *extra])
    assert rc == 0
    if out.suffix == ".jsonl":
        return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    return pd.read_csv(out, dtype=str, keep_default_na=False).to_dict("records")


def _scores(model, dump: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids of the candidate rows, and their margins and entropies from the scorer's own probabilities."""
    rows = [r for r in dump if r["url"] not in ("empty", "english")]
    probs = BaselineScorer(model).predict_proba([f"{r['title']}\n{r['text']}" for r in rows])
    top2 = np.sort(probs, axis=1)[:, -2:]
    return [r["url"] for r in rows], top2[:, 1] - top2[:, 0], scipy_entropy(probs, axis=1)


def test_fixture_ranks_differ_by_strategy(tfidf, dump):
    _, gaps, ent = _scores(tfidf[0], dump)
    assert list(np.argsort(gaps, kind="stable")[:7]) != list(np.argsort(-ent, kind="stable")[:7])


def test_margin_picks_the_lowest_margins(tfidf, dump, dump_file, tmp_path):
    model = tfidf[0]
    ids, gaps, _ = _scores(model, dump)
    expected = [ids[i] for i in np.argsort(gaps, kind="stable")[:7]]
    got = _queue(model, dump_file, tmp_path / "q.csv", 7, "margin")
    assert [r["id"] for r in got] == expected
    assert [float(r["margin"]) for r in got] == pytest.approx(sorted(gaps)[:7], abs=1e-4)


def test_entropy_picks_the_highest_entropies(tfidf, dump, dump_file, tmp_path):
    model = tfidf[0]
    ids, _, ent = _scores(model, dump)
    expected = [ids[i] for i in np.argsort(-ent, kind="stable")[:7]]
    got = _queue(model, dump_file, tmp_path / "q.jsonl", 7, "entropy")
    assert [r["id"] for r in got] == expected
    assert [r["entropy"] for r in got] == pytest.approx(sorted(ent, reverse=True)[:7], abs=1e-4)


def test_refused_rows_are_not_candidates(tfidf, dump, dump_file, capsys):
    job = ReviewJob(model=str(tfidf[0]), input=str(dump_file), output=str(dump_file.parent / "all.csv"),
                    n=len(dump), id_field="url", progress=False)
    summary = review(job)
    assert (summary.rows, summary.candidates) == (len(dump) + 1, len(dump) - 2)
    assert summary.refused == {"no_text": 1, "not_arabic": 1, "invalid_json": 1}
    ids = {r["id"] for r in pd.read_csv(job.output, dtype=str, keep_default_na=False).to_dict("records")}
    assert len(ids) == len(dump) - 2 and not ids & {"empty", "english"}


def _story(row_id: str) -> str:
    return row_id.split("-")[0] if row_id.startswith("story") else row_id


def test_diverse_covers_more_stories_than_margin(tfidf, dump_file, tmp_path):
    model = tfidf[0]
    by_margin = _queue(model, dump_file, tmp_path / "m.csv", 4, "margin")
    diverse = _queue(model, dump_file, tmp_path / "d.csv", 4, "diverse")
    assert len(diverse) == 4 and list(diverse[0]) == [*QUEUE_COLUMNS[:8], "cluster", *QUEUE_COLUMNS[8:]]
    margin_stories = {_story(r["id"]) for r in by_margin}
    diverse_stories = {_story(r["id"]) for r in diverse}
    assert len(margin_stories) < 4  # copies of one story crowd the margin queue
    assert len(diverse_stories) > len(margin_stories) and len(diverse_stories) >= 3
    assert diverse[0]["id"] == by_margin[0]["id"]  # the most uncertain article leads either way
    assert len({r["cluster"] for r in diverse}) == 4


def test_queue_file_is_ready_to_fill(tfidf, dump, dump_file, tmp_path):
    out = tmp_path / "q.csv"
    rows = _queue(tfidf[0], dump_file, out, 5, "margin")
    with open(out, encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == QUEUE_COLUMNS
    source = {r["url"]: r for r in dump}
    for row in rows:
        assert row["label"] == "" and row["text"] == source[row["id"]]["text"].strip()
        assert row["lead"] == " ".join(row["text"].split())[:300]
        top3 = [part.split(":") for part in row["top3"].split(", ")]
        assert len(top3) == 3 and top3[0][0] == row["predicted_label"] and row["predicted_label"] in LABELS
        assert float(top3[0][1]) == pytest.approx(float(row["confidence"]), abs=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["q.csv"]  # no temporary file left behind


def test_existing_queue_needs_overwrite(tfidf, dump_file, tmp_path, capsys):
    out = tmp_path / "q.csv"
    out.write_text("keep me\n", encoding="utf-8")
    rc = main(["review", "--model", str(tfidf[0]), "--input", str(dump_file), "--output", str(out), "--quiet"])
    assert rc == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "keep me\n"
    assert len(_queue(tfidf[0], dump_file, out, 3, "margin", "--overwrite")) == 3


@pytest.mark.parametrize(("case", "message"), [
    ("missing_model", r"^error: .*no-model: model directory not found$"),
    ("missing_input", r"^error: .*nothing\.jsonl: input not found$"),
    ("unreadable_input", r"^error: .*broken\.jsonl\.gz: cannot read"),
    ("n_zero", r"^error: --n 0: need at least 1 article to pick$"),
    ("bad_output", r"^error: .*q\.parquet: the queue is written as \.csv, \.tsv or \.jsonl$"),
    ("nothing_to_pick", r"^error: .*refused\.jsonl: none of its 2 rows can be classified \(no_text 1, "
                        r"not_arabic 1\)$"),
])
def test_bad_input_is_one_line(tfidf, dump_file, tmp_path, capsys, case, message):
    (tmp_path / "broken.jsonl.gz").write_bytes(b"this is not gzip")
    write_jsonl(tmp_path / "refused.jsonl", [{"text": ""}, {"text": "English only"}])
    args = {"model": str(tfidf[0]), "input": str(dump_file), "output": str(tmp_path / "q.csv"), "n": "5"}
    args.update({"missing_model": {"model": str(tmp_path / "no-model")},
                 "missing_input": {"input": str(tmp_path / "nothing.jsonl")},
                 "unreadable_input": {"input": str(tmp_path / "broken.jsonl.gz")},
                 "n_zero": {"n": "0"}, "bad_output": {"output": str(tmp_path / "q.parquet")},
                 "nothing_to_pick": {"input": str(tmp_path / "refused.jsonl")}}[case])
    rc = main(["review", *(x for k, v in args.items() for x in (f"--{k}", v)), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "q.csv").exists()


def test_transformer_model_queue(trained, dump, dump_file, tmp_path):
    from pipeline.scoring import load_scorer

    model = trained[1].model_dir
    rows = [r for r in dump if r["url"] not in ("empty", "english")]
    probs = load_scorer(model, device="cpu").predict_proba([f"{r['title']}\n{r['text']}" for r in rows])
    top2 = np.sort(probs, axis=1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    got = _queue(model, dump_file, tmp_path / "q.csv", 5, "margin", "--runtime", "torch")  # exact float
    assert [float(r["margin"]) for r in got] == pytest.approx(sorted(gaps)[:5], abs=1e-3)
    assert all(r["label"] == "" and r["predicted_label"] in LABELS for r in got)
    # by default, as predict: the fastest runtime that agrees with float on this CPU, chosen once and cached
    copy = Path(shutil.copytree(model, tmp_path / "model"))
    auto = _queue(copy, dump_file, tmp_path / "auto.csv", 5, "margin")
    assert len(auto) == 5 and all(r["predicted_label"] in LABELS for r in auto)
    assert json.loads((copy / "runtime_choice.json").read_text())


def _fill(queue: Path, labels: dict[str, str], extra: list[dict] | None = None) -> Path:
    """Fill the queue's label column as an analyst would (ids not in `labels` stay empty)."""
    frame = pd.read_csv(queue, dtype=str, keep_default_na=False)
    frame["label"] = [labels.get(i, "") for i in frame["id"]]
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True).fillna("")
    frame.to_csv(queue, index=False)
    return queue


@pytest.fixture
def filled(tfidf, corpus, tmp_path):
    """A queue picked from a dump holding one corpus article; four rows labelled, one of them that article."""
    model, _, _ = tfidf
    copied = corpus[0]
    fresh = [{"url": f"new-{i}", "title": r["title"], "text": f"{r['text']} {MARKER}", "label": r["label"]}
             for i, r in enumerate(make_corpus(2, seed=21))]
    dump_rows = [{"url": "copy-of-corpus", "title": copied["title"], "text": copied["text"]}, *fresh]
    dump_path = write_jsonl(tmp_path / "dump.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in dump_rows])
    queue = tmp_path / "queue.csv"
    assert len(_queue(model, dump_path, queue, len(dump_rows), "margin")) == len(dump_rows)
    truth = {r["url"]: r.get("label", copied["label"]) for r in dump_rows}
    labelled = ["copy-of-corpus", *(r["url"] for r in fresh[:9])]
    return _fill(queue, {i: truth[i] for i in labelled}), copied, {i: truth[i] for i in labelled[1:]}


def test_filled_queue_flows_into_prepare_and_baseline(tfidf, filled, capsys):
    _, corpus_file, _ = tfidf
    queue, copied, added = filled
    root = queue.parent
    overrides = [*base_overrides(root, corpus_file), f"data.sources=[{queue}]"]
    assert main(["prepare", *overrides]) == 0
    assert f"source {queue}: read 15, unreviewed 5, skipped 0, duplicates of the corpus 1, added 9" in \
        capsys.readouterr().out
    cfg = load_config(overrides=overrides)
    report = json.loads((root / "processed" / "fixture" / REPORT_FILE).read_text(encoding="utf-8"))
    assert report["sources"] == {str(queue): {"read": 15, "unreviewed": 5, "skipped": 0, "duplicates_of_corpus": 1,
                                              "added": 9}}
    split_rows = {r["id"]: r for s in ("train", "validation", "test") for r in load_split(cfg, s)}
    assert {i: split_rows[i]["label"] for i in added} == added  # in the splits, with the analyst's labels
    assert "copy-of-corpus" not in split_rows and copied["id"] in split_rows  # the corpus wins
    assert report["rows_kept"] == len(split_rows) == 140 + 9
    assert {r["id"] for r in load_split(cfg, "train")} & set(added)  # some of them train
    assert main(["baseline", *overrides]) == 0
    words = BaselineScorer(root / "models" / "fixture-tfidf-logreg").pipe.named_steps["tfidf"].transformer_list[1][1]
    assert MARKER in words.vocabulary_  # the baseline learnt from the reviewed rows


def test_unknown_label_in_a_queue_is_one_line(tfidf, filled, capsys):
    _, corpus_file, _ = tfidf
    queue, _, _ = filled
    frame = pd.read_csv(queue, dtype=str, keep_default_na=False)
    frame.loc[2, "label"] = "sports"
    frame.to_csv(queue, index=False)
    rc = main(["prepare", *base_overrides(queue.parent, corpus_file), f"data.sources=[{queue}]"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.match(rf"error: {queue}:\d+: field 'label': label 'sports' is not in the label "
                                           "set", err), err
    jsonl = write_jsonl(queue.with_suffix(".jsonl"), frame.to_dict("records"))
    with pytest.raises(DataError, match=rf"{jsonl}:3: field 'label': label 'sports'"):
        prepare(load_config(overrides=[*base_overrides(queue.parent, corpus_file), f"data.sources=[{jsonl}]"]))


def test_sources_with_gzip_and_no_reviewed_rows(tfidf, tmp_path):
    _, corpus_file, _ = tfidf
    empty = tmp_path / "unreviewed.jsonl.gz"
    empty.write_bytes(gzip.compress(b'{"id": "x", "text": "\\u0646\\u0635", "label": ""}\n'))
    out = prepare(load_config(overrides=[*base_overrides(tmp_path, corpus_file), f"data.sources=[{empty}]"]))
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    assert report["sources"][str(empty)] == {"read": 1, "unreviewed": 1, "skipped": 0, "duplicates_of_corpus": 0,
                                             "added": 0}
    assert report["rows_kept"] == 140


def test_pool_keeps_only_the_most_uncertain():
    pool, checked = Pool(5), Pool(5)
    rng = random.Random(0)
    priorities = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.9]) for _ in range(1000)]
    for line, p in enumerate(priorities, 1):
        pool.offer(p, line, {"line": line})
        if checked.wants(p, line):  # how the reviewer skips building rows the pool would not keep
            checked.offer(p, line, {"line": line})
        assert len(pool.heap) <= 5
    expected = sorted(range(1, 1001), key=lambda n: (-priorities[n - 1], n))[:5]  # earlier rows win ties
    assert [r["line"] for r in pool.ranked()] == [r["line"] for r in checked.ranked()] == expected


def test_corpus_wins_over_a_source_duplicate_with_another_label():
    base = " ".join(f"كلمة{i}" for i in range(60))
    rows = [{"id": "corpus", "text": base, "label": "other"},
            {"id": "queue", "text": base.replace("كلمة30", "تعديل"), "label": "attack_report", SOURCE_KEY: "q.csv"},
            {"id": "queue-new", "text": "نص مختلف تماما عن غيره", "label": "other", SOURCE_KEY: "q.csv"}]
    kept, stats = deduplicate(rows, DedupConfig())
    assert [r["id"] for r in kept] == ["corpus", "queue-new"]
    assert stats["duplicates_of_corpus"] == {"q.csv": 1} and stats["conflict_clusters"] == 0
    assert stats["duplicates_removed"] == 0


def test_tfidf_review_loads_neither_torch_nor_mlflow(tfidf, dump_file, tmp_path):
    code = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'mlflow', 'transformers') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "review", "--model", str(tfidf[0]), "--input", str(dump_file),
                           "--output", str(tmp_path / "q.csv"), "--id-field", "url", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
