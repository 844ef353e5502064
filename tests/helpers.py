"""Helpers shared by the tests (import them from here, not from conftest): paths, the fixture corpus, the tiny
BERT, and `Tiny`, a tiny-model config whose outputs all stay under one directory."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]  # the project root
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"

# Words that mark each label, and words every label shares; documents are seeded
# random mixtures, so the fixture is separable but no two documents are near-duplicates.
LABEL_WORDS = {
    "recruitment": "تجنيد استقطاب مقاتلين أجانب دعاية تطرف شبكات التواصل الشباب الانضمام التنظيم".split(),
    "attack_report": "انفجار هجوم انتحاري عبوة ناسفة قتلى جرحى استهدف مسلحون تبنى اغتيال".split(),
    "intelligence_assessment": "تقرير تقييم التهديد مستوى الخطر تحليل دراسة الاستخبارات تقديرات مراقبة إحصاءات".split(),
    "security_operation": "اعتقال مداهمة تفكيك خلية ضبط أسلحة محكمة حكم السجن الشرطة المشتبه".split(),
    "military_operation": "غارات قصف الجيش القوات الجوية هجوم بري السيطرة الدبابات الصواريخ اعتراض المناورات".split(),
    "politics_diplomacy": "مفاوضات قمة الرئيس وزير الخارجية اتفاق البرلمان الانتخابات العقوبات زيارة رسمية".split(),
    "other": "الاقتصاد الأسعار المباراة الفريق مهرجان ثقافي الطقس أمطار التكنولوجيا الصحة".split(),
}
COMMON = ("في من على إلى أن قال اليوم أمس العاصمة المدينة مصادر محلية "
          "بيان الأسبوع الماضي وذلك بعد حيث كما أيضا خلال منذ عدد مسؤول").split()
LABELS = list(LABEL_WORDS)


def make_corpus(per_label: int = 20, seed: int = 0, words: int = 30) -> list[dict]:
    """A deterministic, separable corpus of short Arabic pseudo-articles."""
    rng = random.Random(seed)
    rows = []
    for label, vocab in LABEL_WORDS.items():
        for i in range(per_label):
            body = [rng.choice(vocab) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(words)]
            rows.append({"id": f"{label}-{i:03d}", "title": " ".join(rng.sample(vocab, 3)),
                         "text": " ".join(body), "label": label, "source": f"outlet-{i % 4}"})
    rng.shuffle(rows)
    return rows


SECONDARY = {"security_operation": "recruitment", "politics_diplomacy": "military_operation"}


def multi_corpus(per_label: int = 24, seed: int = 0) -> list[dict]:
    """The fixture corpus, where every other security_operation (politics_diplomacy) article is also about
    recruitment (military operations): those carry its words and a second label."""
    rng = random.Random(seed)
    rows = make_corpus(per_label=per_label, seed=seed)
    for i, row in enumerate(rows):
        second = SECONDARY.get(row["label"])
        if second and i % 2 == 0:
            row["text"] += " " + " ".join(rng.choice(LABEL_WORDS[second]) for _ in range(14))
            row["labels"] = [row["label"], second]
        else:
            row["labels"] = [row["label"]]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def base_overrides(root: Path, corpus_path: Path) -> list[str]:
    """Overrides that point a config at a corpus file and keep every output under `root`."""
    return [f"data.path={corpus_path}", f"data.processed_dir={root / 'processed'}", "data.name=fixture",
            f"output_dir={root / 'models'}", f"labels.file={ROOT / 'configs/labels.yaml'}",
            "tracking.enabled=false", "data.split.validation=0.15", "data.split.test=0.15"]


class Tiny:
    """`configs/tiny.yaml` on the tiny BERT and a corpus file, every output under `root`.

    `tiny(*overrides)` is the Config, `tiny.prepared(*overrides)` the same after `prepare`, and
    `tiny.args(*overrides)` the command-line arguments that resolve to it.
    """

    def __init__(self, root: Path, corpus_path: Path, model_dir: Path) -> None:
        self.root, self.corpus_path, self.model_dir = root, corpus_path, model_dir

    def overrides(self, *more: str) -> list[str]:
        """The dotted overrides laid over tiny.yaml."""
        return [*base_overrides(self.root, self.corpus_path), f"model.name_or_path={self.model_dir}", *more]

    def args(self, *more: str) -> list[str]:
        """`-c tiny.yaml` and the overrides, for `cli.main`."""
        return ["-c", str(TINY_CONFIG), *self.overrides(*more)]

    def __call__(self, *more: str):
        """The resolved Config."""
        from pipeline.config import load_config

        return load_config([TINY_CONFIG], self.overrides(*more))

    def prepared(self, *more: str):
        """The resolved Config, its splits prepared."""
        from pipeline.data import prepare

        cfg = self(*more)
        prepare(cfg)
        return cfg


def build_tiny_bert(directory: Path, texts: list[str]) -> Path:
    """A tiny BERT (hidden 32, 2 layers) with a WordPiece vocabulary learnt from `texts`, saved like a hub model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast, set_seed

    # an explicit, sorted vocabulary: WordPiece *training* orders ties differently from one process to the next
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pre = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    chars = sorted({c for w in words for c in w})
    pieces = [*specials, *chars, *(f"##{c}" for c in chars), *(w for w in words if len(w) > 1)]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(dict.fromkeys(pieces))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    set_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """True once `url` answers 200 within `timeout` seconds; False on timeout or when `proc` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


@contextlib.contextmanager
def mlflow_server(backend_uri: str, root: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow server` over `backend_uri` on a free loopback port, artifacts under `root`; its URL, stopped on exit.

    Raises RuntimeError with the end of the server's log when it does not answer /health in time.
    """
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    uri = f"http://127.0.0.1:{free_port()}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                                 "--port", uri.rsplit(":", 1)[1], "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                # no job runner: eight more Python processes, for server jobs the pipeline never uses
                                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        try:
            if not wait_for_http(f"{uri}/health", timeout, proc):
                raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-2000:]}")
            yield uri
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a process started with `start_new_session=True` and its children; kill them if they linger."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class SignalAt(TrainerCallback):
    """Sends this process a signal at the end of one training step, as `kill -TERM` or Ctrl-C would."""

    def __init__(self, step: int, sig: int) -> None:
        self.step, self.sig = step, sig

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class FirstStep(TrainerCallback):
    """Remembers the first training step it saw end (a resumed run's: the one after its checkpoint)."""

    first = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step
