"""Exact and near-duplicate removal (MinHash LSH over word shingles) after normalisation.

Rows that carry `_source` come from an extra labelled source (`data.sources`, e.g. a filled review queue): the
corpus wins against them, so a source row that duplicates a corpus row is dropped and counted, never the corpus row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from pipeline.config import DedupConfig
from pipeline.text import text_digest

SOURCE_KEY = "_source"  # set on rows of data.sources, holding the source's path


def shingles(text: str, size: int) -> list[bytes]:
    """Word n-grams of a text, as bytes for MinHash."""
    words = text.split()
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    return list(dict.fromkeys(" ".join(words[i:i + size]).encode("utf-8") for i in range(len(words) - size + 1)))


def minhashes(texts: list[str], cfg: DedupConfig) -> list[Any]:
    """The texts' MinHashes over word shingles with `cfg`'s permutations: the one way near duplicates are hashed,
    for the corpus's clusters and for known texts alike."""
    from datasketch import MinHash

    return MinHash.bulk((shingles(t, cfg.shingle_size) for t in texts), num_perm=cfg.num_perm)


def lsh_index(cfg: DedupConfig) -> Any:
    """An empty LSH index that finds MinHashes likely at or above `cfg.threshold`."""
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)


def _clusters(rows: list[dict[str, Any]], cfg: DedupConfig) -> list[list[int]]:
    """Groups of row indices that are exact or near duplicates (union-find over LSH candidates)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)  # the earliest row (train first) is the root

    if cfg.exact:
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            union(i, first.setdefault(text_digest(row["text"]), i))
    if cfg.near and rows:
        hashes, lsh = minhashes([r["text"] for r in rows], cfg), lsh_index(cfg)
        for i, mh in enumerate(hashes):
            for j in lsh.query(mh):
                if mh.jaccard(hashes[j]) >= cfg.threshold:
                    union(i, j)
            lsh.insert(i, mh)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        groups[find(i)].append(i)
    return list(groups.values())


def deduplicate(rows: list[dict[str, Any]], cfg: DedupConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keep the first row of each duplicate cluster; drop whole clusters whose labels conflict.

    In a cluster that holds corpus rows, rows of an extra source (`_source`) are dropped first and counted per
    source (`duplicates_of_corpus`), whatever their label: the corpus wins.
    """
    kept_idx, conflicts, removed, of_corpus = [], [], 0, Counter()
    for members in _clusters(rows, cfg):
        corpus = [i for i in members if not rows[i].get(SOURCE_KEY)]
        if corpus and len(corpus) < len(members):
            of_corpus.update(rows[i][SOURCE_KEY] for i in members if rows[i].get(SOURCE_KEY))
            members = corpus
        if len({rows[i]["label"] for i in members}) > 1:
            conflicts.append([rows[i]["id"] for i in members])
            continue
        kept_idx.append(members[0])
        removed += len(members) - 1
    kept = [rows[i] for i in sorted(kept_idx)]
    stats = {"duplicates_removed": removed, "conflict_clusters": len(conflicts),
             "conflict_rows_removed": sum(len(c) for c in conflicts), "conflict_examples": conflicts[:20],
             "duplicates_of_corpus": dict(of_corpus)}
    return kept, stats


class KnownTexts:
    """Texts to recognise again among unlabelled ones: exactly (digest) or, with `cfg.near`, nearly (Jaccard of word
    shingles at or above `cfg.threshold`, MinHash LSH), so that an edited copy of a held-out article is caught too.
    `hits` counts the texts recognised."""

    def __init__(self, texts: list[str], cfg: DedupConfig) -> None:
        self.cfg, self.hits = cfg, 0
        self.digests = {text_digest(t) for t in texts}
        self.lsh, self.hashes = None, []
        if cfg.near and texts:
            self.hashes, self.lsh = minhashes(texts, cfg), lsh_index(cfg)
            for i, mh in enumerate(self.hashes):
                self.lsh.insert(i, mh)

    def __len__(self) -> int:
        return len(self.digests)

    def __contains__(self, text: str) -> bool:
        found = text_digest(text) in self.digests or (self.lsh is not None and self._near(text))
        self.hits += found
        return found

    def _near(self, text: str) -> bool:
        mh = minhashes([text], self.cfg)[0]
        return any(mh.jaccard(self.hashes[j]) >= self.cfg.threshold for j in self.lsh.query(mh))
