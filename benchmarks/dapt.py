"""Domain-adaptive pretraining of e5-small on unlabelled news of the security corpus's outlets and months, for
`cv_recipe.py --backbone` (and any fine-tune): one backbone for every fold, partition and seed, because it never read
an article of the security corpus.

    python benchmarks/dapt.py                  # 4,000 articles, 1 epoch: ~250 steps, ~55 min on 2 CPU cores
    python benchmarks/dapt.py --docs 8000 --epochs 1 --output models/pretrained/e5-small-ant-dapt-8k

The articles are ANT's internationalNews and middleEast sections (../shared/data/ant-topics: SkyNews Arabia,
AlArabiya, BBC Arabic, CNN Arabic and France24, Feb-Oct 2018; the sections where ANT filed 1,228 of the security
corpus's 1,451 ANT 2018 articles), shuffled with a fixed seed. ANT holds the security corpus's articles too, so they
are left out twice: here by URL, and by `pipeline pretrain --exclude` of the whole corpus, which also drops exact and
near copies of its texts (an edited headline, a revised paragraph). `pretrain.json` in the backbone directory
records both counts, and `cv_recipe.py --backbone` refuses a backbone whose pretraining did not exclude the corpus.
A run that was stopped continues from its last checkpoint (every 50 steps) when started again with the same
arguments.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CORPUS = SHARED / "security-news" / "labelled.jsonl"
DUMP = SHARED / "ant-topics" / "ant_multisource.jsonl.gz"
SECTIONS = ("internationalNews", "middleEast")
WORK = ROOT / "benchmarks" / "results" / "work" / "dapt"
OUTPUT = ROOT / "models" / "pretrained" / "e5-small-ant-dapt"


def unlabelled_input(docs: int, seed: int, out: Path) -> dict[str, int]:
    """Write `docs` articles of ANT's SECTIONS, shuffled, none with a security-corpus URL, to `out` (JSONL)."""
    from pipeline.readers import read_jsonl, write_jsonl

    urls = {r["url"] for r in read_jsonl(CORPUS) if r.get("url")}
    section = [r for r in read_jsonl(DUMP) if r.get("label") in SECTIONS]
    rows = [{k: r[k] for k in ("id", "title", "text", "source", "date")} for r in section if r.get("url") not in urls]
    random.Random(seed).shuffle(rows)
    write_jsonl(out, rows[:docs])
    return {"section_articles": len(section), "left_out_by_url": len(section) - len(rows),
            "written": min(docs, len(rows))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4000, help="articles to pretrain on")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42, help="the shuffle's seed")
    ap.add_argument("--output", type=Path, default=OUTPUT, help="the backbone directory to write")
    args = ap.parse_args()
    if not (CORPUS.is_file() and DUMP.is_file()):
        print(f"skipped: {CORPUS} or {DUMP} is absent (benchmarks read real data from ../shared/data)")
        return
    from recipe import CONFIGS, E5

    from pipeline.config import load_config
    from pipeline.pretrain import pretrain

    inputs = WORK / f"ant-{'-'.join(SECTIONS)}-{args.docs}-seed{args.seed}.jsonl"
    counts = unlabelled_input(args.docs, args.seed, inputs)
    print(f"{counts['written']} articles of {counts['section_articles']} in {', '.join(SECTIONS)} "
          f"({counts['left_out_by_url']} security-corpus URLs left out) -> {inputs}", flush=True)
    # the corpus's own config, without its prepared splits: --exclude leaves out every labelled article instead
    cfg = load_config([*CONFIGS, *E5], [f"pretrain.epochs={args.epochs:g}", f"data.processed_dir={WORK / 'none'}",
                                         "train.resume=true"])  # a run that was stopped continues from its checkpoint
    report = pretrain(cfg, [str(inputs)], args.output, [str(CORPUS)],
                      about={"file": inputs.name, "sections": list(SECTIONS), "seed": args.seed, **counts})
    print(f"{report['articles']} articles pretrained on ({report['left_out']['articles']} more left out as copies of "
          f"security-corpus articles), {report['steps']} steps, {report['seconds'] / 60:.0f} min: held-out masked-LM "
          f"loss {report['mlm_loss_before']} -> {report['mlm_loss_after']}; backbone: {args.output}")


if __name__ == "__main__":
    main()
