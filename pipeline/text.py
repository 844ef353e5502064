"""Arabic text normalisation and web boilerplate removal: pure `str -> str` functions."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

from pipeline.config import TextConfig

DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed]")
TATWEEL = "\u0640"
ALEF = re.compile("[\u0622\u0623\u0625\u0671]")  # آ أ إ ٱ
DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
REPEATED_PUNCT = re.compile(r"([!?.,;:\-_=*~•،؛؟…])\1+")
SPACES = re.compile(r"[ \t\u00a0\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")
ARABIC_LETTER = re.compile("[\u0621-\u064a\u0671-\u06d3\u06fa-\u06ff]")
LETTER = re.compile(r"[^\W\d_]")

# Site chrome of Arabic news sites, matched against a folded line (no diacritics,
# alef/ya/ta marbuta folded), so one pattern covers the spelling variants.
BOILERPLATE = [
    r"(مقالات|اخبار|مواضيع|قصص) (ذات صله|مشابهه|متعلقه)",
    r"^(اترك|اضف|اكتب) (تعليقا|تعليق|ردا|رد)",
    r"لن يتم نشر عنوان بريدك",
    r"الحقول (الالزاميه|المطلوبه) مشار اليها",
    r"(الذهاب|العوده|الرجوع) (الي الاعلي|للاعلي)",
    r"^(شارك|شاركها|شارك هذا|انشر)\b.*(فيسبوك|فيس بوك|تويتر|واتساب|تيليجرام|لينكد ان|البريد)",
    r"^(فيسبوك|تويتر|واتساب|تيليجرام|لينكدان|بينتريست|ماسنجر|x)( |$)",
    r"(اشترك|اشتركوا|سجل) (في|ب) ?(نشرتنا|النشره|القائمه البريديه|قناتنا|خدمه)",
    r"^(تابعونا|تابعنا|تابعوا) (علي|عبر)",
    r"(جميع|كل) الحقوق محفوظه",
    r"^©",
    r"^اقرا (ايضا|المزيد)",
    r"^(طباعه|حجم الخط|مشاركه|اعلان|الرئيسيه|اخر الاخبار)$",
    r"^(share|tweet|print|advertisement|read more|related articles?)\b",
]
BOILERPLATE_MAX_WORDS = 20


def fold(text: str) -> str:
    """Aggressive folding used only for matching: no diacritics, alef/ya/ta marbuta folded, lower case."""
    text = DIACRITICS.sub("", text).replace(TATWEEL, "")
    text = ALEF.sub("ا", text).replace("ى", "ي").replace("ة", "ه")
    text = re.sub(r"[^\w\s©]", " ", text)
    return " ".join(text.lower().split())


def compile_boilerplate(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """One regex for the built-in chrome patterns plus user patterns (also matched on folded text)."""
    patterns = [*BOILERPLATE, *(fold(p) if not _is_regex(p) else p for p in extra)]
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _is_regex(pattern: str) -> bool:
    return any(ch in pattern for ch in "^$[]()|\\*+?")


_DEFAULT_CHROME = compile_boilerplate()


def is_boilerplate(line: str, chrome: re.Pattern[str] = _DEFAULT_CHROME) -> bool:
    """True for a short line that is site chrome (share buttons, comment forms, related links)."""
    folded = fold(line)
    if not folded:
        return False
    return len(folded.split()) <= BOILERPLATE_MAX_WORDS and bool(chrome.search(folded))


def find_repeated_lines(texts: Iterable[str], min_docs: int, max_words: int = 40) -> frozenset[str]:
    """Lines (stripped) that occur in at least `min_docs` documents: chrome of a scraped site."""
    counts: Counter[str] = Counter()
    for text in texts:
        lines = {" ".join(line.split()) for line in (text or "").splitlines()}
        counts.update(line for line in lines if line and len(line.split()) <= max_words)
    return frozenset(line for line, n in counts.items() if n >= min_docs)


def strip_boilerplate(text: str, chrome: re.Pattern[str] = _DEFAULT_CHROME,
                      drop_lines: frozenset[str] = frozenset()) -> str:
    """Drop chrome lines and lines known to repeat across the corpus."""
    kept = [line for line in text.splitlines()
            if " ".join(line.split()) not in drop_lines and not is_boilerplate(line, chrome)]
    return "\n".join(kept)


def remove_diacritics(text: str) -> str:
    """Remove tashkeel (harakat, tanwin, shadda, sukun, dagger alef, Quranic marks)."""
    return DIACRITICS.sub("", text)


def remove_tatweel(text: str) -> str:
    """Remove the kashida/tatweel stretching character."""
    return text.replace(TATWEEL, "")


def normalize_alef(text: str) -> str:
    """Fold hamza and madda alef variants (أ إ آ ٱ) to bare alef."""
    return ALEF.sub("ا", text)


def normalize_alef_maqsura(text: str) -> str:
    """Fold alef maqsura (ى) to ya (ي)."""
    return text.replace("ى", "ي")


def normalize_ta_marbuta(text: str) -> str:
    """Fold ta marbuta (ة) to ha (ه)."""
    return text.replace("ة", "ه")


def normalize_digits(text: str) -> str:
    """Arabic-Indic and Eastern Arabic-Indic digits to ASCII digits."""
    return text.translate(DIGITS)


def remove_urls(text: str) -> str:
    """Remove http(s) and www links."""
    return URL.sub(" ", text)


def remove_emails(text: str) -> str:
    """Remove e-mail addresses."""
    return EMAIL.sub(" ", text)


def collapse_punctuation(text: str) -> str:
    """Collapse runs of the same punctuation mark (!!!, ؟؟, ....) to one."""
    return REPEATED_PUNCT.sub(r"\1", text)


def normalize_whitespace(text: str) -> str:
    """Collapse spaces and invisible marks within lines, strip lines, drop empty lines."""
    lines = (SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


_STEPS = [  # order matters: e-mails before URLs, links before punctuation
    ("remove_emails", remove_emails),
    ("remove_urls", remove_urls),
    ("remove_diacritics", remove_diacritics),
    ("remove_tatweel", remove_tatweel),
    ("normalize_alef", normalize_alef),
    ("normalize_alef_maqsura", normalize_alef_maqsura),
    ("normalize_ta_marbuta", normalize_ta_marbuta),
    ("normalize_digits", normalize_digits),
    ("collapse_punctuation", collapse_punctuation),
    ("normalize_whitespace", normalize_whitespace),
]


class Normalizer:
    """The configured normaliser; callable `str -> str`, deterministic and idempotent."""

    def __init__(self, cfg: TextConfig, drop_lines: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self.drop_lines = drop_lines
        self.chrome = compile_boilerplate(cfg.boilerplate_patterns)
        self.steps = [fn for name, fn in _STEPS if getattr(cfg, name)]

    def __call__(self, text: str | None) -> str:
        """Normalise one text."""
        text = text or ""
        if self.cfg.strip_boilerplate:
            text = strip_boilerplate(text, self.chrome, self.drop_lines)
        for step in self.steps:
            text = step(text)
        return text


def arabic_share(text: str) -> float:
    """Share of letters that are Arabic; 0.0 for text without letters."""
    letters = LETTER.findall(text)
    if not letters:
        return 0.0
    return sum(1 for ch in letters if ARABIC_LETTER.match(ch)) / len(letters)


def join_fields(values: Iterable[object]) -> str:
    """Join text fields (title, body) with a line break, skipping empty ones."""
    return "\n".join(str(v).strip() for v in values if v is not None and str(v).strip())


def text_digest(text: str) -> str:
    """sha1 of a text: equal digests, the same text (exact duplicates, held-out or labelled articles)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
