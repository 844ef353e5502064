from pathlib import Path

import pytest

from pipeline import text as T
from pipeline.config import TextConfig

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(("fn", "raw", "expected"), [
    (T.remove_diacritics, "مَقْتَلُ عَشَرَةٍ", "مقتل عشرة"),
    (T.remove_diacritics, "هٰذا", "هذا"),  # dagger alef
    (T.remove_tatweel, "الجـــيش", "الجيش"),
    (T.normalize_alef, "أحمد إلى آمال ٱلله", "احمد الى امال الله"),
    (T.normalize_alef_maqsura, "على مستوى", "علي مستوي"),
    (T.normalize_ta_marbuta, "الحكومة الليبية", "الحكومه الليبيه"),
    (T.normalize_digits, "عام ٢٠٢٥ و۱۲", "عام 2025 و12"),
    (T.remove_urls, "المصدر: https://example.org/a?b=1 و www.site.com", "المصدر:   و  "),
    (T.remove_emails, "راسلونا info@news.example.com الآن", "راسلونا   الآن"),
    (T.collapse_punctuation, "عاجل!!! ماذا؟؟ ...انتهى،،", "عاجل! ماذا؟ .انتهى،"),
    (T.normalize_whitespace, "  سطر\t\tأول \u200f\n\n\n سطر  ثان ", "سطر أول\nسطر ثان"),
])
def test_each_rule(fn, raw, expected):
    assert fn(raw) == expected


def test_defaults_keep_letters_that_bert_vocabularies_distinguish():
    norm = T.Normalizer(TextConfig())
    assert norm("أعلنت الحكومة على") == "أعلنت الحكومة على"


def test_each_rule_switchable():
    raw = "أَعلنـت الحكومة ٣ قرارات!!"
    assert T.Normalizer(TextConfig())(raw) == "أعلنت الحكومة 3 قرارات!"
    off = TextConfig(remove_diacritics=False, remove_tatweel=False, normalize_digits=False,
                     collapse_punctuation=False)
    assert T.Normalizer(off)(raw) == raw
    folded = TextConfig(normalize_alef=True, normalize_ta_marbuta=True, normalize_alef_maqsura=True)
    assert T.Normalizer(folded)("أعلنت الحكومة على") == "اعلنت الحكومه علي"


def test_normaliser_is_idempotent_and_handles_none():
    norm = T.Normalizer(TextConfig())
    raw = (FIXTURES / "scraped_article.txt").read_text(encoding="utf-8")
    once = norm(raw)
    assert norm(once) == once
    assert norm(None) == ""


def test_boilerplate_removed_from_scraped_article():
    raw = (FIXTURES / "scraped_article.txt").read_text(encoding="utf-8")
    out = T.Normalizer(TextConfig())(raw)
    assert out.splitlines() == [
        "أخبار عربية",
        "تفكيك خلية إرهابية في مدينة ساحلية",
        "منذ ساعتين",
        "أعلنت وزارة الداخلية اليوم تفكيك خلية من خمسة عناصر كانت تخطط لاستهداف منشآت عامة، "
        "وضبط أسلحة ومواد متفجرة في مخبأ بضواحي المدينة.",
        "وقال متحدث باسم الوزارة إن التحقيقات ما زالت جارية لتحديد ارتباطات الخلية بالخارج.",
    ]


@pytest.mark.parametrize("line", [
    "مقالات ذات صلة", "أخبار ذات صلة", "اترك تعليقاً", "أضف تعليق",
    "لن يتم نشر عنوان بريدك الإلكتروني. الحقول الإلزامية مشار إليها بـ *",
    "زر الذهاب إلى الأعلى", "العودة للأعلى", "شارك على فيسبوك", "شارك هذا الخبر عبر واتساب تويتر",
    "اشترك في النشرة البريدية", "تابعونا على تويتر", "جميع الحقوق محفوظة 2026", "© 2025 صحيفة الأفق",
    "اقرأ أيضا: الجيش يعلن السيطرة على المدينة", "طباعة", "Share", "Read more",
])
def test_chrome_lines(line):
    assert T.is_boilerplate(line)


@pytest.mark.parametrize("line", [
    "وقال الوزير إن الجيش سيعود إلى الأعلى في سلم الأولويات",
    "شارك مئات المقاتلين في الهجوم على المدينة",
    "أعلنت الحكومة أن جميع الحقوق المدنية ستصان وفق الدستور الجديد الذي أقره البرلمان بعد جدل طويل استمر شهورا بين "
    "الكتل السياسية المختلفة حول صلاحيات الرئيس ومجلس الوزراء",
])
def test_article_lines_are_kept(line):
    assert not T.is_boilerplate(line)


def test_user_patterns():
    norm = T.Normalizer(TextConfig(boilerplate_patterns=["حمل تطبيقنا الآن"]))
    assert norm("خبر مهم\nحمّل تطبيقنا الآن") == "خبر مهم"


def test_lines_repeated_across_documents():
    docs = [f"خبر رقم {i}\nتابع آخر المستجدات على موقعنا الإخباري" for i in range(6)]
    repeated = T.find_repeated_lines(docs, min_docs=5)
    assert repeated == {"تابع آخر المستجدات على موقعنا الإخباري"}
    norm = T.Normalizer(TextConfig(), drop_lines=repeated)
    assert norm(docs[0]) == "خبر رقم 0"
    assert T.find_repeated_lines(docs, min_docs=7) == frozenset()


def test_arabic_share_and_join():
    assert T.arabic_share("الجيش") == 1.0
    assert T.arabic_share("The army الجيش") < 0.5
    assert T.arabic_share("2025 !!") == 0.0
    assert T.join_fields(["عنوان", None, " ", "نص"]) == "عنوان\nنص"
