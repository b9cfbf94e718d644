"""Quality filters (gopher_quality, gopher_repetition, c4_quality, fineweb_quality) on real text.

Every drop reason of every filter has a document that triggers exactly that reason and a
near-identical twin on the other side of the threshold; where the threshold can be met exactly the
twin sits *on* it (and is kept: comparisons are strict, as in datatrove), so a flipped comparison or
a changed default fails a test.  Decisions (and C4's rewritten text) are checked against datatrove's
filters on the same documents.  Also: row languages (word rules, stop words, scripts without
spaces), annotate mode, parameter errors and one end-to-end run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_docs, winnow, write_config

from pipeline.config import ConfigError, load_pipelines
from pipeline.stage import CHANGE_CHARS, CHANGE_CONTEXT, StageRunner
from stages.quality import (
    DATATROVE_REASONS,
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    QualityFilter,
)
from stages.words import splitter_for, stop_words_for

FILTERS = (GopherQuality, GopherRepetition, C4Quality, FineWebQuality)

# --- real text ----------------------------------------------------------------------------------
# The Universal Declaration of Human Rights (public; un.org and its official translations).

EN = [
    "All human beings are born free and equal in dignity and rights. They are endowed with reason and "
    "conscience and should act towards one another in a spirit of brotherhood.",
    "Everyone is entitled to all the rights and freedoms set forth in this Declaration, without distinction "
    "of any kind, such as race, colour, sex, language, religion, political or other opinion, national or "
    "social origin, property, birth or other status.",
    "Everyone has the right to life, liberty and security of person.",
    "No one shall be held in slavery or servitude; slavery and the slave trade shall be prohibited in all "
    "their forms.",
    "No one shall be subjected to torture or to cruel, inhuman or degrading treatment or punishment.",
    "Everyone has the right to recognition everywhere as a person before the law.",
    "All are equal before the law and are entitled without any discrimination to equal protection of the "
    "law. All are entitled to equal protection against any discrimination in violation of this Declaration "
    "and against any incitement to such discrimination.",
    "Everyone has the right to an effective remedy by the competent national tribunals for acts violating "
    "the fundamental rights granted him by the constitution or by law.",
    "No one shall be subjected to arbitrary arrest, detention or exile.",
    "Everyone is entitled in full equality to a fair and public hearing by an independent and impartial "
    "tribunal, in the determination of his rights and obligations and of any criminal charge against him.",
    "Everyone charged with a penal offence has the right to be presumed innocent until proved guilty "
    "according to law in a public trial at which he has had all the guarantees necessary for his defence.",
    "No one shall be subjected to arbitrary interference with his privacy, family, home or correspondence, "
    "nor to attacks upon his honour and reputation. Everyone has the right to the protection of the law "
    "against such interference or attacks.",
    "Everyone has the right to freedom of movement and residence within the borders of each State.",
]
DE = [
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen "
    "begabt und sollen einander im Geist der Brüderlichkeit begegnen.",
    "Jeder hat Anspruch auf die in dieser Erklärung verkündeten Rechte und Freiheiten ohne irgendeinen "
    "Unterschied, etwa nach Rasse, Hautfarbe, Geschlecht, Sprache, Religion, politischer oder sonstiger "
    "Überzeugung, nationaler oder sozialer Herkunft, Vermögen, Geburt oder sonstigem Stand.",
    "Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
    "Niemand darf in Sklaverei oder Leibeigenschaft gehalten werden; Sklaverei und Sklavenhandel sind in "
    "allen ihren Formen verboten.",
    "Niemand darf der Folter oder grausamer, unmenschlicher oder erniedrigender Behandlung oder Strafe "
    "unterworfen werden.",
    "Jeder hat das Recht, überall als rechtsfähig anerkannt zu werden.",
]
FR = [
    "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison et de "
    "conscience et doivent agir les uns envers les autres dans un esprit de fraternité.",
    "Chacun peut se prévaloir de tous les droits et de toutes les libertés proclamés dans la présente "
    "Déclaration, sans distinction aucune, notamment de race, de couleur, de sexe, de langue, de religion, "
    "d'opinion politique ou de toute autre opinion, d'origine nationale ou sociale, de fortune, de naissance "
    "ou de toute autre situation.",
    "Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.",
]
ES = [
    "Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como están de razón y "
    "conciencia, deben comportarse fraternalmente los unos con los otros.",
    "Toda persona tiene todos los derechos y libertades proclamados en esta Declaración, sin distinción "
    "alguna de raza, color, sexo, idioma, religión, opinión política o de cualquier otra índole, origen "
    "nacional o social, posición económica, nacimiento o cualquier otra condición.",
    "Todo individuo tiene derecho a la vida, a la libertad y a la seguridad de su persona.",
]
RU = [
    "Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и совестью и "
    "должны поступать в отношении друг друга в духе братства.",
    "Каждый человек должен обладать всеми правами и всеми свободами, провозглашенными настоящей Декларацией, "
    "без какого бы то ни было различия, как-то в отношении расы, цвета кожи, пола, языка, религии, "
    "политических или иных убеждений, национального или социального происхождения, имущественного, "
    "сословного или иного положения.",
    "Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
]
AR = [
    "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق. وقد وهبوا عقلاً وضميرًا وعليهم أن يعامل بعضهم "
    "بعضًا بروح الإخاء.",
    "لكل إنسان حق التمتع بكافة الحقوق والحريات الواردة في هذا الإعلان، دون أي تمييز، كالتمييز بسبب العنصر "
    "أو اللون أو الجنس أو اللغة أو الدين أو الرأي السياسي أو أي رأي آخر، أو الأصل الوطني أو الاجتماعي أو "
    "الثروة أو الميلاد أو أي وضع آخر.",
    "لكل فرد الحق في الحياة والحرية وسلامة شخصه.",
]
ZH = [
    "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。",
    "人人有资格享有本宣言所载的一切权利和自由，不分种族、肤色、性别、语言、宗教、政治或其他见解、国籍或社会出身、财产、出生或其他身分等任何区别。",
    "人人有权享有生命、自由和人身安全。",
]
JA = [
    "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。人間は、理性と良心とを授けられており、互いに同胞の精神をもって行動しなければならない。",
    "すべて人は、生命、自由及び身体の安全に対する権利を有する。",
]
TH = [
    "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ ต่างมีเหตุผลและมโนธรรม "
    "และควรปฏิบัติต่อกันด้วยเจตนารมณ์แห่งภราดรภาพ",
    "ทุกคนมีสิทธิในการดำเนินชีวิต เสรีภาพ และความมั่นคงแห่งร่างกาย",
]
KO = [
    "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다. 인간은 천부적으로 이성과 양심을 "
    "부여받았으며 서로 형제애의 정신으로 행동하여야 한다.",
    "모든 사람은 인종, 피부색, 성, 언어, 종교, 정치적 또는 기타의 견해, 민족적 또는 사회적 출신, 재산, 출생 "
    "또는 기타의 지위 등에 따른 어떠한 종류의 차별이 없이, 이 선언에 규정된 모든 권리와 자유를 향유할 "
    "자격이 있다.",
    "모든 사람은 생명과 신체의 자유와 안전에 대한 권리를 가진다.",
    "어느 누구도 노예상태 또는 예속상태에 놓여지지 아니한다. 모든 형태의 노예제도와 노예매매는 금지된다.",
]
UDHR = {"en": EN, "de": DE, "fr": FR, "es": ES, "ru": RU, "ar": AR}

# --- documents, one pair per rule: the twin on the kept side first --------------------------------

# gopher_quality.  short_doc: Articles 3 and 7 are exactly 50 words (punctuation is not a word).
WORDS_50 = EN[2] + "\n" + EN[6]
WORDS_49 = EN[2].replace("life, liberty and security", "life and security") + "\n" + EN[6]
# long_doc: 100,000 words (no hyphens or contractions in EN: one word per whitespace chunk)
_CHUNKS = " ".join(EN).split()
_MANY = (_CHUNKS * (100_001 // len(_CHUNKS) + 1))[:100_001]
WORDS_100000 = " ".join(_MANY[:100_000])
WORDS_100001 = " ".join(_MANY)
# short_mean_word_length: an early reader, 210 letters in 70 words = exactly 3.0
READER = (
    "I am Samuel and I have a kitten. The kitten can run and jump. Can you see the kitten? I can see it on "
    "the mat. It is a big red kitten and it is my pet. The dog and the kitten ran up the hill to the top of "
    "it. Now we sit in the sun and eat bread with jam. It was fun to be with my kitten."
)
READER_SHORTER = READER.replace("with my kitten.", "with my cat.")
# long_mean_word_length: a German town hall page, 500 letters in 50 words = exactly 10.0 (language de)
AMT = (
    "Im Bürgerbüro der Stadtverwaltung erhalten Sie Beratung bei der Einkommensteuererklärung und beim "
    "Kindergeldantrag. Die Kraftfahrzeugzulassungsbehörde ist für Fahrzeugzulassungen und "
    "Kennzeichenreservierungen zuständig. Das Standesamt stellt Geburtsurkunden und Sterbeurkunden aus und "
    "nimmt Namensänderungserklärungen entgegen. Die Ausländerbehörde bearbeitet Aufenthaltstitel und "
    "Einbürgerungsanträge. Das Ordnungsamt erteilt Sondernutzungserlaubnisse und "
    "Veranstaltungsgenehmigungen. Die Wohngeldstelle prüft Wohngeldanträge und Härtefallentscheidungen."
)
AMT_LONGER = AMT.replace("Die Wohngeldstelle", "Die Wohngeldbehörde")
# too_many_hashes: 6 "#" in 60 tokens = exactly 0.1
POST = (
    "Golden hour at the old harbour tonight. We walked along the old pier with our cameras and watched the "
    "fishing boats come back in while the sky turned orange and pink. Thanks to everyone who joined the "
    "photo walk and shared their pictures with us!\n"
    "#sunset #harbour #photography #goldenhour #travel #nofilter"
)
POST_MORE_TAGS = POST + " #photooftheday"
# too_many_ellipsis: 7 ellipses in 70 tokens = exactly 0.1; no line ends with one
FORUM = (
    "Well... I tried the update and now the laptop will not boot... The fan spins, the screen stays "
    "black... nothing happens.\n"
    "I already removed the battery... held the power button for a minute... no luck. Has anyone seen this "
    "before?\n"
    "I am starting to think the motherboard is dead... or maybe the update broke the firmware... Any ideas?"
)
FORUM_MORE_DOTS = FORUM.replace("no luck.", "no luck...")
FORUM_UNICODE_DOTS = FORUM.replace("no luck.", "no luck…")
# too_many_bullets: 9 of 10 lines = exactly 0.9
RIGHTS = [
    "the right to life, liberty and security of person",
    "freedom from slavery and servitude in all their forms",
    "freedom from torture and from cruel or degrading treatment",
    "recognition everywhere as a person before the law",
    "equal protection of the law without any discrimination",
    "an effective remedy by the competent national tribunals",
    "freedom from arbitrary arrest, detention or exile",
    "a fair and public hearing by an independent tribunal",
    "the presumption of innocence until proved guilty by law",
    "protection of his privacy, family, home and correspondence",
]
BULLETS_9 = "The Universal Declaration of Human Rights guarantees everyone\n" + "\n".join(
    "- " + r for r in RIGHTS[:9]
)
BULLETS_10 = "The Universal Declaration of Human Rights guarantees everyone\n" + "\n".join(
    "  • " + r for r in RIGHTS
)
# too_many_end_ellipsis: 3 of 10 lines end with an ellipsis = exactly 0.3
CITY_NEWS = [
    "Latest news from the city council",
    "The council has approved the new budget for schools and public libraries.",
    "Work on the tram line to the airport will start in the spring and is expected to take two years…",
    "Residents are invited to a public meeting about the redevelopment of the old harbour district.",
    "The mayor said that the city would plant ten thousand trees over the next five years…",
    "Parking fees in the city centre will rise by ten percent from the first of April.",
    "A new bicycle lane along the river opened to the public on Saturday morning.",
    "Police are asking witnesses of the accident on the ring road to come forward…",
    "The swimming pool in the east of the city will be closed for repairs until June.",
    "Tickets for the summer festival go on sale at the town hall next week.",
]
TEASERS_3 = "\n".join(CITY_NEWS)
TEASERS_4 = TEASERS_3.replace("first of April.", "first of April...   ")
# below_alpha_threshold: 72 of 90 tokens have a letter = exactly 0.8
TIMETABLE = (
    "Departures from Berlin Hauptbahnhof\n"
    "ICE 1005 to Munich at 10:04 from platform 7\n"
    "IC 2431 to Hamburg at 10:17 from platform 12\n"
    "RE 3308 to Frankfurt an der Oder at 10:21 from platform 3\n"
    "ICE 846 to Cologne at 10:35 from platform 9\n"
    "EC 175 to Prague at 10:46 from platform 8\n"
    "Please check the departure boards in the station because platforms and times can change. Passengers "
    "with a valid ticket can use the lounge on the 1st floor, and the travel centre is open until midnight."
)
TIMETABLE_24H = TIMETABLE.replace("midnight", "24:00")
# not_enough_stop_words: "and" and "with" are two of Gopher's eight; "With" does not count
SHOE = (
    "Men's Running Shoes\nLightweight breathable mesh trainers for road running, gym workouts and everyday "
    "walking. Cushioned midsole with gel inserts absorbs impact. Rubber outsole gives grip on wet roads. "
    "Padded collar keeps your heel in place. Removable insole for custom orthotics. Upper made from "
    "recycled polyester. Available in black, grey, navy or white. Machine washable. Free delivery on all "
    "orders over fifty pounds. Free returns within thirty days."
)
SHOE_ONE_STOP_WORD = SHOE.replace(" with gel inserts", "")
SHOE_CAPITAL = SHOE.replace(" with gel", " With gel")

# gopher_repetition.  dup_para_frac: 3 of 10 paragraphs repeat = exactly 0.3
AD = "Advertisement"
ADS_3 = "\n\n".join([EN[0], AD, EN[2], AD, EN[4], AD, EN[5], AD, EN[8], EN[9]])
ADS_4 = "\n\n".join([EN[0], AD, EN[2], AD, EN[4], AD, EN[5], AD, EN[8], AD])


def tracking_url(length: int) -> str:
    """A newsletter click-tracking link (one spaCy token) of exactly ``length`` characters."""
    base = "https://newsletter.example.org/track/click?campaign=udhr-75&list=weekly&utm_source=newsletter&id="
    return base + ("8f3a2c91d4e5b6a7" * 10)[: length - len(base)]


# dup_para_char_frac: the link paragraph repeats, exactly a fifth of the characters (T = 5 L)
_BODY = [EN[0], EN[2], EN[3], EN[5]]
_L = (sum(map(len, _BODY)) + 2 * (len(_BODY) + 1)) // 3
NEWSLETTER = "\n\n".join([tracking_url(_L), *_BODY, tracking_url(_L)])
NEWSLETTER_LONGER = "\n\n".join([tracking_url(_L + 1), *_BODY, tracking_url(_L + 1)])
# dup_line_char_frac: the same, as a line inside two different paragraphs
_INTRO = "Read the declaration online:"
_LL = (len(_INTRO) + len(EN[1]) + len(EN[2]) + len(EN[5]) + 6) // 3


def _link_lines(length: int) -> str:
    url = tracking_url(length)
    return f"{_INTRO}\n{url}\n{EN[1]}\n\n{EN[2]}\n{EN[5]}\n{url}"


LINK_LINES = _link_lines(_LL)
LINK_LINES_LONGER = _link_lines(_LL + 1)
# dup_line_frac: 3 of 10 lines are a repeated "Reply" (one paragraph) = exactly 0.3
COMMENTS = [
    "Great article, thanks for explaining the new rules so clearly.",
    "I still do not understand why the council waited so long to act.",
    "Does anyone know if the changes also apply to small businesses?",
    "My neighbours have been complaining about this for years.",
    "Finally some good news for people who cycle to work every day.",
    "The comment section here is always more interesting than the article itself.",
]
_C = COMMENTS
REPLIES_3 = "\n".join([_C[0], "Reply", _C[1], "Reply", _C[2], "Reply", _C[3], "Reply", _C[4], _C[5]])
REPLIES_4 = "\n".join([_C[0], "Reply", _C[1], "Reply", _C[2], "Reply", _C[3], "Reply", _C[4], "Reply"])
# top_2_gram: keyword stuffing; one "New York" less and the top 2-gram share drops under 0.2
SEO = "\n".join(
    [
        "New York hotels with free breakfast",
        "Cheap flights from London to New York",
        "Best pizza in Brooklyn, New York",
        "Top ten things to do in New York",
        "New York weather forecast for December",
        "Broadway tickets for shows in New York",
        "Where to stay in New York on a budget",
        "New York airport transfers and taxis",
    ]
)
SEO_ONE_LESS = SEO.replace("New York airport", "NYC airport")
# top_3_gram: a shop listing with "Add to basket" after every (differently priced) product
SHOP = "\n".join(
    [
        "Leather wallet in brown with six card slots and a coin pocket £25 Add to basket",
        "Silk scarf with a floral print, hand rolled edges £40 Add to basket",
        "Wool beanie hat in grey, one size fits most £15 Add to basket",
        "Canvas tote bag with an inside zip pocket £12 Add to basket",
        "Cotton socks, pack of five pairs in mixed colours £9 Add to basket",
        "Sunglasses with polarised lenses and a hard case £30 Add to basket",
    ]
)
SHOP_SOLD_OUT = SHOP.replace("£30 Add to basket", "£30 Sold out")
# top_4_gram: a news index with "Read the full story" after every headline
INDEX = "\n".join(
    [
        "Council approves the new budget for primary schools, sports halls and public libraries Read the "
        "full story",
        "Work on the tram line to the airport has been delayed again until the spring Read the full story",
        "City announces plans to plant ten thousand trees in parks over the next five years Read the full "
        "story",
        "Parking fees in the city centre will rise by ten percent from the first of April Read the full "
        "story",
        "A new bicycle lane along the river opened to the public on Saturday Read the full story",
    ]
)
INDEX_VIDEO = INDEX.replace("Saturday Read the full story", "Saturday Watch the video")
# duplicated_5/6/7/8_n_grams: an article quoted in two sections
QUOTED_TWICE_5 = EN[0] + " " + EN[5] + "\n\n" + EN[11] + " " + EN[5]
QUOTED_TWICE_6 = EN[0] + " " + EN[4] + "\n\n" + EN[9] + " " + EN[4]
QUOTED_TWICE_7 = EN[0] + " " + EN[2] + "\n\n" + EN[8] + " " + EN[2]
QUOTED_TWICE_8 = EN[1] + " " + EN[3] + "\n\n" + EN[6] + " " + EN[3]
# ... and kept just under the thresholds: 5-grams 0.1497; 7-grams 0.1298 and 8-grams 0.1058
QUOTED_UNDER_5 = EN[3] + " " + EN[5] + "\n\n" + EN[6] + " " + EN[5]
QUOTED_UNDER_7 = EN[1] + " " + EN[8] + "\n\n" + EN[11] + " " + EN[8]
# duplicated_10_n_grams: 10 repeated words (42 letters) in exactly 420 characters = 0.1
ESSAY = (
    "Article 1 of the Universal Declaration of 1948 reads: " + EN[0] + "\n\n"
    "Eleanor Roosevelt insisted that it should speak of all peoples rather than of men. The words human "
    "beings are born free and equal in dignity and rights were adopted in Paris on 10 December 1948."
)
ESSAY_SHORTER = ESSAY.replace("all peoples", "all people")

# c4_quality.  A page: navigation, cookie and JavaScript notices, a tracking pixel, and 5 sentences.
PIXEL = "data:image/png;base64," + base64.b64encode(hashlib.sha512(b"pixel").digest() * 12).decode()


def c4_page(heading: str = "The Universal Declaration of Human Rights", pixel: bool = True) -> str:
    lines = [
        "Home",
        "News Sport",
        heading,
        EN[0],
        "Everyone has the right to life, liberty and security of person.[1]",
        "  " + EN[3] + "  ",
        "This website uses cookies to improve your experience.",
        "Please enable JavaScript to view the comments powered by Disqus.",
        "Terms of Use | Privacy Policy | Contact",
        f'<img src="{PIXEL}"> Tracking pixel used by the page.',
    ]
    return "\n".join(lines if pixel else lines[:-1])


PAGE = c4_page()
PAGE_CLEAN = "\n".join(
    [
        "The Universal Declaration of Human Rights",
        EN[0],
        "Everyone has the right to life, liberty and security of person.",
        EN[3],
    ]
)
PAGE_4_SENTENCES = c4_page("Human Rights")  # a two-word heading is removed: 4 sentences left
_SENTENCES = "\n".join([EN[0], EN[2], EN[3], EN[5]])  # 5 sentences
LOREM = (
    "Sample Page\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n"
    + _SENTENCES
)
LOREM_HEADING = "Sample Page\nLorem ipsum\n" + _SENTENCES  # two words: removed before the lorem rule
LOREM_JS = "Lorem ipsum text is generated with JavaScript on this demo page.\n" + _SENTENCES
CODE = _SENTENCES + "\nfunction greet(name) { return 'Hello, ' + name; }"
CODE_IN_JS_LINE = _SENTENCES + "\nIn JavaScript you would write function greet(name) { return name; }"
CODE_SHORT_LINE = _SENTENCES + "\n{ }"
# 4 sentences by German rules ("3." is an ordinal), 5 by English ones
EINHEIT = (
    "Am 3. Oktober 1990 wurde Deutschland wiedervereinigt.\n"
    "Der Tag der Deutschen Einheit ist seitdem ein gesetzlicher Feiertag.\n"
    "Die Feiern finden jedes Jahr in einer anderen Landeshauptstadt statt.\n"
    "Im Jahr 2024 war Schwerin der Gastgeber."
)

# fineweb_quality.  line_punct_ratio: 3 of 25 headlines end in punctuation = exactly 0.12
HEADLINES = [
    "Council approves new budget for schools and libraries",
    "Tram line to the airport delayed until next spring",
    "City plans to plant ten thousand trees by the year 2030",
    "Parking fees in the city centre to rise by ten percent",
    "New bicycle lane along the river opens to the public",
    "Swimming pool in the east closed for repairs until June",
    "Tickets for the summer festival go on sale next week",
    "Police ask witnesses of ring road accident to come forward",
    "Local bakery wins national award for its rye bread",
    "Museum of modern art extends opening hours on Fridays",
    "Heavy rain expected across the region this weekend",
    "University opens new research centre for climate science",
    "Hospital car park to be rebuilt after years of complaints",
    "Football club signs young striker from the second division",
    "Library launches free coding classes for teenagers",
    "Old cinema on the market square reopens after renovation",
    "Bus drivers announce strike for the first week of May",
    "Farmers market moves to a new location near the station",
    "Mayor meets residents to discuss the harbour redevelopment",
    "Record number of tourists visited the old town this summer",
    "Water supply interrupted in the northern district on Tuesday",
    "Primary school pupils raise money for the animal shelter",
    "New cycling bridge over the railway will cost twelve million",
    "Street lights switched to LED to save energy and money",
    "Jazz festival returns to the castle gardens in August",
]
_H = list(HEADLINES)
_H[0] += "."
_H[10] += "!"
HEADLINES_2_PUNCT = "\n".join(_H)
HEADLINES_2_OF_18 = "\n".join(_H[:18])  # 0.111
_H[20] += "?"
HEADLINES_3_PUNCT = "\n".join(_H)
# short_line_ratio: 8 of 12 lines are <= 30 characters (0.667); one more ingredient: 9 of 13 (0.692)
RECIPE_LINES = [
    "Classic pancakes",
    "Ingredients",
    "200 g plain flour",
    "2 large eggs",
    "300 ml semi-skimmed milk",
    "1 tbsp sunflower oil",
    "a pinch of salt",
    "Method",
    "Put the flour and a pinch of salt into a large bowl and make a well in the centre.",
    "Crack the eggs into the middle, then pour in about 50 ml of the milk and the oil.",
    "Whisk until you have a smooth, thick batter, then whisk in the rest of the milk.",
    "Cook each pancake for about a minute on each side until golden and serve at once.",
]
RECIPE = "\n".join(RECIPE_LINES)
RECIPE_LEMON = "\n".join([*RECIPE_LINES[:7], "1 lemon, cut into wedges", *RECIPE_LINES[7:]])
# char_dup_ratio: a repeated "Reply" (5 characters) in exactly 500 characters = 0.01
THREAD = "\n".join(
    [
        "Thank you for this clear explanation of the new recycling rules, it finally makes sense to me.",
        "Reply",
        "Does anyone know whether the collection days for garden waste are changing as well this year?",
        "Reply",
        "They are not changing in our street, but the council website says that some districts will move to "
        "a fortnightly collection from April, so it is worth checking your own address there first. The "
        "page also lists the new summer opening hours of the recycling centres, which are now open on "
        "Sunday mornings.",
    ]
)
THREAD_SHORTER = THREAD.replace("Sunday mornings", "Sunday morning")
# list_ratio: 9 newlines for 30 tokens = exactly 0.3
DOWNLOADS = "\n".join(
    [
        "The following documents can be downloaded as PDF files.",
        *(
            f"https://www.example.org/files/{name}.pdf"
            for name in (
                "annual-report-2023",
                "annual-report-2022",
                "financial-statement-2023",
                "financial-statement-2022",
                "sustainability-report-2023",
                "code-of-conduct",
                "privacy-notice",
                "articles-of-association",
            )
        ),
        "Please contact us if one of the links does not work.",
    ]
)
DOWNLOADS_SHORTER = DOWNLOADS.replace("Please contact", "Contact")
# 10 newlines for 33 tokens = 0.303
DOWNLOADS_MORE = DOWNLOADS.replace("contact us if", "contact us by phone if") + "\nhttps://example.org/x.pdf"


# --- the cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    stage: type[QualityFilter]
    text: str
    reason: str | None
    language: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # exact annotate values (the thresholds)
    parity: bool = True  # compare with datatrove (False: too slow there)


CASES = [
    # gopher_quality
    Case("udhr-en", GopherQuality, "\n\n".join(EN), None),
    Case("words-50", GopherQuality, WORDS_50, None, scores={"n_words": 50}),
    Case("words-49", GopherQuality, WORDS_49, "short_doc", scores={"n_words": 49}),
    Case("words-100000", GopherQuality, WORDS_100000, None, scores={"n_words": 100_000}, parity=False),
    Case("words-100001", GopherQuality, WORDS_100001, "long_doc", parity=False),
    Case("reader-3.0", GopherQuality, READER, None, scores={"mean_word_length": 3.0}),
    Case("reader-2.96", GopherQuality, READER_SHORTER, "short_mean_word_length"),
    Case("amt-10.0", GopherQuality, AMT, None, "de", scores={"mean_word_length": 10.0}),
    Case("amt-10.02", GopherQuality, AMT_LONGER, "long_mean_word_length", "de"),
    Case("hashes-0.1", GopherQuality, POST, None, scores={"hash_ratio": 0.1}),
    Case("hashes-0.11", GopherQuality, POST_MORE_TAGS, "too_many_hashes"),
    Case("ellipsis-0.1", GopherQuality, FORUM, None, scores={"ellipsis_ratio": 0.1}),
    Case("ellipsis-0.11", GopherQuality, FORUM_MORE_DOTS, "too_many_ellipsis"),
    Case("ellipsis-0.11-unicode", GopherQuality, FORUM_UNICODE_DOTS, "too_many_ellipsis"),
    Case("bullets-0.9", GopherQuality, BULLETS_9, None, scores={"bullet_lines_ratio": 0.9}),
    Case("bullets-0.91", GopherQuality, BULLETS_10, "too_many_bullets"),
    Case("end-ellipsis-0.3", GopherQuality, TEASERS_3, None, scores={"ellipsis_lines_ratio": 0.3}),
    Case("end-ellipsis-0.4", GopherQuality, TEASERS_4, "too_many_end_ellipsis"),
    Case("alpha-0.8", GopherQuality, TIMETABLE, None, scores={"alpha_words_ratio": 0.8}),
    Case("alpha-0.79", GopherQuality, TIMETABLE_24H, "below_alpha_threshold"),
    Case("stop-words-2", GopherQuality, SHOE, None, scores={"stop_words": 2}),
    Case(
        "stop-words-1", GopherQuality, SHOE_ONE_STOP_WORD, "not_enough_stop_words", scores={"stop_words": 1}
    ),
    Case("stop-words-case", GopherQuality, SHOE_CAPITAL, "not_enough_stop_words", scores={"stop_words": 1}),
    Case("udhr-de-as-de", GopherQuality, "\n".join(DE), None, "de"),
    Case("udhr-de-as-en", GopherQuality, "\n".join(DE), "not_enough_stop_words", "en"),
    Case("udhr-fr", GopherQuality, "\n".join(FR), None, "fr"),
    Case("udhr-es", GopherQuality, "\n".join(ES), None, "es"),
    Case("udhr-ru", GopherQuality, "\n".join(RU), None, "ru"),
    Case("udhr-ar", GopherQuality, "\n".join(AR), None, "ar"),
    # gopher_repetition
    Case("rep-udhr-en", GopherRepetition, "\n\n".join(EN), None),
    Case("paras-0.3", GopherRepetition, ADS_3, None, scores={"dup_para_frac": 0.3}),
    Case("paras-0.4", GopherRepetition, ADS_4, "dup_para_frac"),
    Case("para-chars-0.2", GopherRepetition, NEWSLETTER, None, scores={"dup_para_char_frac": 0.2}),
    Case("para-chars-0.2006", GopherRepetition, NEWSLETTER_LONGER, "dup_para_char_frac"),
    Case("lines-0.3", GopherRepetition, REPLIES_3, None, scores={"dup_line_frac": 0.3}),
    Case("lines-0.4", GopherRepetition, REPLIES_4, "dup_line_frac"),
    Case("line-chars-0.2", GopherRepetition, LINK_LINES, None, scores={"dup_line_char_frac": 0.2}),
    Case("line-chars-0.2008", GopherRepetition, LINK_LINES_LONGER, "dup_line_char_frac"),
    Case("top2-0.195", GopherRepetition, SEO_ONE_LESS, None),
    Case("top2-0.219", GopherRepetition, SEO, "top_2_gram"),
    Case("top3-0.163", GopherRepetition, SHOP_SOLD_OUT, None),
    Case("top3-0.194", GopherRepetition, SHOP, "top_3_gram"),
    Case("top4-0.155", GopherRepetition, INDEX_VIDEO, None),
    Case("top4-0.192", GopherRepetition, INDEX, "top_4_gram"),
    Case("dup5", GopherRepetition, QUOTED_TWICE_5, "duplicated_5_n_grams"),
    Case("dup6", GopherRepetition, QUOTED_TWICE_6, "duplicated_6_n_grams"),
    Case("dup7", GopherRepetition, QUOTED_TWICE_7, "duplicated_7_n_grams"),
    Case("dup8", GopherRepetition, QUOTED_TWICE_8, "duplicated_8_n_grams"),
    Case("dup5-0.1497", GopherRepetition, QUOTED_UNDER_5, None),
    Case("dup7-0.1298", GopherRepetition, QUOTED_UNDER_7, None),
    Case("dup10-0.1", GopherRepetition, ESSAY, None, scores={"dup_10_gram_char_frac": 0.1}),
    Case("dup10-0.1002", GopherRepetition, ESSAY_SHORTER, "duplicated_10_n_grams"),
    Case("rep-udhr-de", GopherRepetition, "\n\n".join(DE), None, "de"),
    Case("rep-udhr-ru", GopherRepetition, "\n".join(RU), None, "ru"),
    # c4_quality
    Case("c4-page-5", C4Quality, PAGE, None, scores={"sentences": 5, "lines": 10, "lines_removed": 6}),
    Case("c4-page-4", C4Quality, PAGE_4_SENTENCES, "too_few_sentences", scores={"sentences": 4}),
    Case("lorem", C4Quality, LOREM, "lorem_ipsum", scores={"lorem_ipsum": True}),
    Case("lorem-heading", C4Quality, LOREM_HEADING, None, scores={"lorem_ipsum": False}),
    Case("lorem-before-js", C4Quality, LOREM_JS, "lorem_ipsum"),
    Case("curly", C4Quality, CODE, "curly_bracket", scores={"curly_bracket": True}),
    Case("curly-in-js-line", C4Quality, CODE_IN_JS_LINE, None, scores={"curly_bracket": False}),
    Case("curly-short-line", C4Quality, CODE_SHORT_LINE, None),
    Case("einheit-de", C4Quality, EINHEIT, "too_few_sentences", "de", scores={"sentences": 4}),
    Case("einheit-en", C4Quality, EINHEIT, None, "en", scores={"sentences": 5}),
    Case("c4-udhr-fr", C4Quality, "\n".join(FR), "too_few_sentences", "fr"),
    Case("c4-udhr-de", C4Quality, "\n".join(DE), None, "de"),
    # fineweb_quality
    Case("fw-udhr-en", FineWebQuality, "\n".join(EN), None),
    Case("punct-0.12", FineWebQuality, HEADLINES_3_PUNCT, None, scores={"line_punct_ratio": 0.12}),
    Case("punct-0.08", FineWebQuality, HEADLINES_2_PUNCT, "line_punct_ratio"),
    Case("punct-0.111", FineWebQuality, HEADLINES_2_OF_18, "line_punct_ratio"),
    Case("short-0.667", FineWebQuality, RECIPE, None, scores={"short_line_ratio": 8 / 12}),
    Case("short-0.692", FineWebQuality, RECIPE_LEMON, "short_line_ratio"),
    Case("char-dup-0.01", FineWebQuality, THREAD, None, scores={"char_dup_ratio": 0.01}),
    Case("char-dup-0.01002", FineWebQuality, THREAD_SHORTER, "char_dup_ratio"),
    Case("newlines-0.3", FineWebQuality, DOWNLOADS, None, scores={"newline_ratio": 0.3}),
    Case("newlines-0.31", FineWebQuality, DOWNLOADS_SHORTER, "list_ratio"),
    Case("newlines-0.303", FineWebQuality, DOWNLOADS_MORE, "list_ratio"),
    Case("fw-udhr-ar", FineWebQuality, "\n".join(AR), None, "ar"),
]
CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


# --- helpers --------------------------------------------------------------------------------------


def make(cls: type[QualityFilter], **params) -> QualityFilter:
    stage = cls(cls.Params(**params))
    stage.setup()
    return stage


def run(
    stage: QualityFilter, texts: list[str | None], languages: list[str | None] | None = None
) -> tuple[list[str | None], pa.RecordBatch, StageRunner]:
    """One batch through ``StageRunner``: per-row reasons (from the removed samples), the output
    batch and the runner, after checking the bookkeeping agrees with itself."""
    ids = [f"doc-{i}" for i in range(len(texts))]
    columns = {"id": ids, "text": pa.array(texts, pa.string())}
    if languages is not None:
        columns["language"] = pa.array(languages, pa.string())
    runner = StageRunner(stage)
    docs_in, dropped_before = stage.stats.docs_in, Counter(stage.stats.dropped)
    out = runner(pa.RecordBatch.from_pydict(columns))
    samples = {s["id"]: s for s in runner.samples}
    reasons = [samples[i]["reason"] if i in samples else None for i in ids]
    assert out.column("id").to_pylist() == [i for i, r in zip(ids, reasons) if r is None]
    assert stage.stats.docs_in - docs_in == len(texts)
    assert stage.stats.dropped - dropped_before == Counter(r for r in reasons if r is not None)
    for i, text in zip(ids, texts):
        if i in samples:  # the sample keeps the text as it came in
            assert samples[i]["text"] == (text[:2000] if text is not None else None)
    return reasons, out, runner


def reason_of(cls: type[QualityFilter], text: str | None, label: str | None = None, **params) -> str | None:
    """The drop reason of one row (``label``: its ``language`` column; ``params`` may set the stage's
    ``language`` parameter, used for rows without a label)."""
    return run(make(cls, **params), [text], None if label is None else [label])[0][0]


def annotated(cls: type[QualityFilter], texts, languages=None, **params) -> tuple[list[dict], QualityFilter]:
    stage = make(cls, mode="annotate", **params)
    reasons, out, _ = run(stage, texts, languages)
    assert reasons == [None] * len(texts) and out.num_rows == len(texts)
    return out.to_pylist(), stage


def datatrove_decision(cls: type[QualityFilter], text: str, language: str) -> tuple[str | None, str]:
    """(our name of datatrove's drop reason or None, the text after the filter)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    if cls is GopherQuality:
        stop_words = None if language == "en" else sorted(stop_words_for(language))
        dt_filter = GopherQualityFilter(language=language, stop_words=stop_words)
    elif cls is GopherRepetition:
        dt_filter = GopherRepetitionFilter(language=language)
    elif cls is C4Quality:
        dt_filter = C4QualityFilter(filter_no_terminal_punct=False, language=language)
    else:
        dt_filter = FineWebQualityFilter(language=language)
    doc = Document(text=text, id="x")
    result = dt_filter.filter(doc)
    reason = None if result is True else result[1]
    return DATATROVE_REASONS.get(reason, reason), doc.text


# --- every reason, both sides of its threshold ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_drop_reason(case):
    languages = None if case.language is None else [case.language]
    stage = make(case.stage)
    reasons, _, runner = run(stage, [case.text], languages)
    assert reasons == [case.reason]
    if case.reason is not None:
        assert [s["reason"] for s in runner.samples] == [case.reason]
        assert runner.samples[0]["text_chars"] == len(case.text)
    if case.scores:
        rows, _ = annotated(case.stage, [case.text], languages)
        got = {k: rows[0][f"{case.stage.name}_{k}"] for k in case.scores}
        assert got == case.scores


@pytest.mark.parametrize("case", [c for c in CASES if c.parity], ids=[c.id for c in CASES if c.parity])
def test_same_decision_as_datatrove(case):
    stage = make(case.stage)
    reason, _, new_text = stage.judge(case.text, case.language)
    dt_reason, dt_text = datatrove_decision(case.stage, case.text, case.language or "en")
    assert (reason, dt_reason) == (case.reason, case.reason)
    if case.stage is C4Quality and reason is None:
        assert (new_text if new_text is not None else case.text) == dt_text


def test_each_filter_on_one_batch():
    """All cases of a filter in one batch: drop counts, samples, kept rows in order."""
    for cls in FILTERS:
        cases = [c for c in CASES if c.stage is cls]
        stage = make(cls)
        reasons, out, _ = run(stage, [c.text for c in cases], [c.language for c in cases])
        assert reasons == [c.reason for c in cases]
        assert dict(stage.stats.dropped) == dict(Counter(c.reason for c in cases if c.reason))
        assert (stage.stats.docs_in, stage.stats.docs_out) == (len(cases), out.num_rows)
        assert stage.stats.bytes_in > stage.stats.bytes_out > 0


def test_every_documented_reason_is_covered():
    covered = {c.reason for c in CASES}
    documented = {
        "short_doc", "long_doc", "short_mean_word_length", "long_mean_word_length", "too_many_hashes",
        "too_many_ellipsis", "too_many_bullets", "too_many_end_ellipsis", "below_alpha_threshold",
        "not_enough_stop_words", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
        "top_2_gram", "top_3_gram", "top_4_gram", "lorem_ipsum", "curly_bracket", "too_few_sentences",
        "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio",
    }  # fmt: skip
    assert documented <= covered


@pytest.mark.parametrize("cls", FILTERS, ids=[c.name for c in FILTERS])
def test_empty_documents(cls):
    assert run(make(cls), [None, "", "   ", " \n\t\n "])[0] == ["empty"] * 4


# --- thresholds are parameters, comparisons are strict --------------------------------------------


def test_gopher_quality_thresholds():
    assert reason_of(GopherQuality, WORDS_49, min_doc_words=49) is None
    assert reason_of(GopherQuality, WORDS_49, min_doc_words=None) is None
    assert reason_of(GopherQuality, WORDS_50, max_doc_words=50) is None
    assert reason_of(GopherQuality, WORDS_50, max_doc_words=49) == "long_doc"
    assert reason_of(GopherQuality, READER_SHORTER, min_avg_word_length=207 / 70) is None
    assert reason_of(GopherQuality, AMT_LONGER, "de", max_avg_word_length=10.02) is None
    assert reason_of(GopherQuality, POST, max_symbol_word_ratio=0.099) == "too_many_hashes"
    assert reason_of(GopherQuality, FORUM_MORE_DOTS, max_symbol_word_ratio=8 / 70) is None
    assert reason_of(GopherQuality, BULLETS_10, max_bullet_lines_ratio=10 / 11) is None
    assert reason_of(GopherQuality, BULLETS_10, max_bullet_lines_ratio=None) is None
    assert reason_of(GopherQuality, TEASERS_3, max_ellipsis_lines_ratio=0.29) == "too_many_end_ellipsis"
    assert reason_of(GopherQuality, TIMETABLE, min_alpha_words_ratio=0.81) == "below_alpha_threshold"
    assert reason_of(GopherQuality, TIMETABLE_24H, min_alpha_words_ratio=71 / 90) is None
    assert reason_of(GopherQuality, SHOE, min_stop_words=3) == "not_enough_stop_words"
    assert reason_of(GopherQuality, SHOE_ONE_STOP_WORD, min_stop_words=1) is None
    assert reason_of(GopherQuality, SHOE_ONE_STOP_WORD, min_stop_words=None) is None


def test_gopher_repetition_thresholds():
    assert reason_of(GopherRepetition, ADS_4, dup_para_frac=0.4) == "dup_line_frac"  # the next rule
    assert reason_of(GopherRepetition, ADS_4, dup_para_frac=0.4, dup_line_frac=0.4) is None
    assert reason_of(GopherRepetition, ADS_3, dup_para_frac=0.29) == "dup_para_frac"
    assert reason_of(GopherRepetition, NEWSLETTER, dup_para_char_frac=0.19) == "dup_para_char_frac"
    assert reason_of(GopherRepetition, REPLIES_4, dup_line_frac=0.4) is None
    assert reason_of(GopherRepetition, LINK_LINES, dup_line_char_frac=0.19) == "dup_line_char_frac"
    assert reason_of(GopherRepetition, SEO, top_n_grams={2: 0.25}) is None
    assert reason_of(GopherRepetition, SEO, top_n_grams={3: 0.1}) == "top_3_gram"
    assert reason_of(GopherRepetition, ESSAY_SHORTER, dup_n_grams={10: 42 / 419}) is None
    assert reason_of(GopherRepetition, ESSAY, dup_n_grams={5: 0.05, 10: 0.05}) == "duplicated_5_n_grams"
    assert reason_of(GopherRepetition, QUOTED_TWICE_5, dup_n_grams={}) is None
    # every rule off: even a page of one repeated paragraph passes
    off = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None)
    assert (
        reason_of(GopherRepetition, "\n\n".join([EN[0]] * 5), top_n_grams={}, dup_n_grams={}, **off) is None
    )


def test_c4_thresholds():
    assert reason_of(C4Quality, PAGE_4_SENTENCES, min_num_sentences=4) is None
    assert reason_of(C4Quality, PAGE_4_SENTENCES, min_num_sentences=None) is None
    assert reason_of(C4Quality, PAGE, min_num_sentences=6) == "too_few_sentences"
    assert reason_of(C4Quality, LOREM, filter_lorem_ipsum=False) is None
    assert reason_of(C4Quality, CODE, filter_curly_bracket=False) is None
    # without the JavaScript rule the bracket in that line drops the page
    assert reason_of(C4Quality, CODE_IN_JS_LINE, filter_javascript=False) == "curly_bracket"
    assert reason_of(C4Quality, CODE_SHORT_LINE, min_words_per_line=None) == "curly_bracket"


def test_fineweb_thresholds():
    assert reason_of(FineWebQuality, HEADLINES_2_PUNCT, line_punct_thr=0.08) is None
    assert reason_of(FineWebQuality, HEADLINES_3_PUNCT, line_punct_thr=0.13) == "line_punct_ratio"
    assert reason_of(FineWebQuality, RECIPE_LEMON, short_line_thr=9 / 13) is None
    assert reason_of(FineWebQuality, RECIPE, short_line_thr=0.66) == "short_line_ratio"
    assert reason_of(FineWebQuality, THREAD_SHORTER, char_duplicates_ratio=5 / 499) is None
    assert reason_of(FineWebQuality, DOWNLOADS_SHORTER, new_line_ratio=9 / 29) is None
    assert reason_of(FineWebQuality, DOWNLOADS, new_line_ratio=0.29) == "list_ratio"
    # no line ends in punctuation: dropped, unless zero is excluded; other stop characters
    assert reason_of(FineWebQuality, "\n".join(HEADLINES)) == "line_punct_ratio"
    assert reason_of(FineWebQuality, "\n".join(HEADLINES), line_punct_exclude_zero=True) is None
    assert reason_of(FineWebQuality, HEADLINES_3_PUNCT, line_punct_exclude_zero=True) is None
    assert reason_of(FineWebQuality, HEADLINES_2_PUNCT, line_punct_exclude_zero=True) == "line_punct_ratio"
    assert reason_of(FineWebQuality, "\n".join(HEADLINES), stop_chars=["e", "s"]) is None


def test_fineweb_short_line_length_is_inclusive():
    # the last method line replaced by one of exactly 30 characters: short (<=), 9 of 12 lines
    for last, expected in (
        ("Serve at once with some lemon.", "short_line_ratio"),
        ("Serve at once with fresh lemon.", None),
    ):
        assert len(last) == (30 if expected else 31)
        assert reason_of(FineWebQuality, "\n".join([*RECIPE_LINES[:-1], last])) == expected
    assert reason_of(FineWebQuality, RECIPE, short_line_length=10) is None
    assert reason_of(FineWebQuality, RECIPE, short_line_length=82) == "short_line_ratio"


def test_fineweb_counts_characters_without_newlines():
    assert len(THREAD) - THREAD.count("\n") == 500
    # blank lines are neither lines nor characters here
    rows, _ = annotated(FineWebQuality, [THREAD.replace("\n", "\n\n\n")])
    assert rows[0]["fineweb_quality_char_dup_ratio"] == 0.01


# --- c4: lines removed, text rewritten ------------------------------------------------------------


def test_c4_removes_lines_and_rewrites_text():
    stage = make(C4Quality)
    reasons, out, _ = run(stage, [PAGE, PAGE_4_SENTENCES, "\n".join(DE)], [None, None, "de"])
    assert reasons == [None, "too_few_sentences", None]
    assert out.column("text").to_pylist() == [PAGE_CLEAN, "\n".join(DE)]  # unchanged text stays as is
    assert stage.stats.extra["lines_removed"] == {
        "too_few_words": 2 + 3,
        "policy": 2 + 2,
        "javascript": 1 + 1,
        "too_long_word": 1 + 1,
    }
    assert stage.stats.extra["lines"] == {"total": 10 + 10 + 6, "kept": 4 + 3 + 6}
    assert stage.stats.bytes_out < stage.stats.bytes_in


def test_c4_keeps_before_after_samples_of_rewritten_documents():
    """The report shows C4's line removal as before/after: only kept, rewritten documents are
    sampled (not the dropped one, not the unchanged one), bounded per task."""
    stage = make(C4Quality)
    run(stage, [PAGE, PAGE_4_SENTENCES, "\n".join(DE), PAGE, PAGE], [None, None, "de", None, None])
    samples = stage.changed_samples
    assert [(s["id"], s["reason"]) for s in samples] == [
        (f"doc-{i}", "changed:lines_removed") for i in (0, 3, 4)
    ]
    first = len(os.path.commonprefix([PAGE, PAGE_CLEAN]))  # noqa: RUF071 (text, not paths)
    lo = max(0, first - CHANGE_CONTEXT)
    assert samples[0]["before"] == PAGE[lo : lo + CHANGE_CHARS]
    assert samples[0]["after"] == PAGE_CLEAN[lo : lo + CHANGE_CHARS]
    assert samples[0]["text_chars"] == len(PAGE)
    assert stage.stats.extra["docs_changed"] == 3  # counted for every rewritten document
    stage.sample_limit = 3
    stage.sample_change("changed:lines_removed", "doc-9", PAGE, PAGE_CLEAN)
    assert len(stage.changed_samples) == 3  # at most sample_limit per reason


def test_c4_no_terminal_punct_when_enabled():
    stage = make(C4Quality, filter_no_terminal_punct=True)
    lines = [
        EN[0],
        EN[2],
        EN[3],
        EN[5],
        "Read more about the Declaration",
        "Is that so?",
        "Ends with ...",
        '"Yes, it is."',
    ]
    reasons, out, _ = run(stage, ["\n".join(lines)])
    assert reasons == [None]
    assert out.column("text")[0].as_py() == "\n".join(
        [EN[0], EN[2], EN[3], EN[5], "Is that so?", '"Yes, it is."']
    )
    assert stage.stats.extra["lines_removed"] == {"no_terminal_punct": 2}
    # the page above loses its heading and its terms line this way: 4 sentences left
    stage = make(C4Quality, filter_no_terminal_punct=True)
    assert run(stage, [PAGE])[0] == ["too_few_sentences"]
    assert stage.stats.extra["lines_removed"] == {
        "no_terminal_punct": 4,
        "policy": 1,
        "javascript": 1,
        "too_long_word": 1,
    }


def test_c4_line_rule_boundaries():
    def kept_lines(extra_line: str, **params) -> list[str]:
        stage = make(C4Quality, **params)
        reasons, out, _ = run(stage, [_SENTENCES + "\n" + extra_line])
        assert reasons == [None]
        return out.column("text")[0].as_py().split("\n")[4:]

    word_1000 = PIXEL[:1000]
    assert kept_lines(f"Embedded image {word_1000} here.") == [f"Embedded image {word_1000} here."]
    assert kept_lines(f"Embedded image {word_1000}x here.") == []
    assert kept_lines(f"Embedded image {word_1000}x here.", max_word_length=None) != []
    assert kept_lines("Share this article") == ["Share this article"]
    assert kept_lines("Share this") == []
    assert kept_lines("Share this", min_words_per_line=2) == ["Share this"]
    # citations go after the word count ("[edit]" is a word of its own here); the text is stripped
    assert kept_lines("Paris is the capital of France.[1] [edit]") == ["Paris is the capital of France."]
    assert kept_lines("Cited twice [12][citation needed]\nThe end of the page.") == [
        "Cited twice ",
        "The end of the page.",
    ]
    assert kept_lines("Cited twice [12]", remove_citations=False) == ["Cited twice [12]"]
    assert kept_lines("[edit] [1]") == []
    assert kept_lines("Notes [a] stay here") == ["Notes [a] stay here"]
    # the policy wording, any case
    for line in [
        "We use cookies on this site",
        "Read our PRIVACY POLICY here",
        "See the cookie policy below",
    ]:
        assert kept_lines(line) == []
        assert kept_lines(line, filter_policy=False) == [line]
    assert kept_lines("Please enable Javascript now", filter_javascript=False) == [
        "Please enable Javascript now"
    ]


# --- languages ------------------------------------------------------------------------------------


def test_rows_are_split_with_their_languages_rules():
    """n_words in annotate mode equals spaCy's tokenizer for the row's language (not English)."""
    import spacy
    from datatrove.utils.text import PUNCTUATION_SET

    texts = ["\n".join(UDHR[lang]) for lang in UDHR]
    rows, _ = annotated(GopherQuality, texts, list(UDHR))
    for lang, text, row in zip(UDHR, texts, rows):
        tokens = [t.text for t in spacy.blank(lang).tokenizer(text) if not t.is_space]
        words = [w for w in tokens if any(ch not in PUNCTUATION_SET for ch in w)]
        assert row["gopher_quality_n_words"] == len(words), lang
        assert row["gopher_quality_reason"] is None, lang
    # the same French text with English rules: "d'opinion" stays one word
    (fr_as_en,), _ = annotated(GopherQuality, [texts[2]], ["en"])
    assert fr_as_en["gopher_quality_n_words"] < rows[2]["gopher_quality_n_words"]


def test_stop_words_follow_the_row_language():
    de = "\n".join(DE)
    expected_de = len(stop_words_for("de") & set(splitter_for("de").words(de)))
    rows, _ = annotated(GopherQuality, [de, de, de], ["de", "en", None])
    assert [r["gopher_quality_stop_words"] for r in rows] == [expected_de, 0, 0]
    assert [r["gopher_quality_reason"] for r in rows] == [
        None,
        "not_enough_stop_words",
        "not_enough_stop_words",
    ]
    assert expected_de >= 20
    # the language parameter for rows without a label
    assert reason_of(GopherQuality, de, language="de") is None
    stage = make(GopherQuality, language="de")
    assert run(stage, [de, de], [None, "en"])[0] == [None, "not_enough_stop_words"]
    # one list for every language
    assert reason_of(GopherQuality, de, stop_words=["und", "der"]) is None
    assert reason_of(GopherQuality, de, "de", stop_words=["the", "and"]) == "not_enough_stop_words"
    # a list per language; languages not in it keep their defaults
    per_language = {"de": ["und", "der", "Menschen"], "fr": ["le", "la"]}
    texts = [de, "\n".join(FR), SHOE_ONE_STOP_WORD, "\n".join(ES)]
    rows, _ = annotated(GopherQuality, texts, ["de", "fr", "en", "es"], stop_words=per_language)
    assert [r["gopher_quality_stop_words"] for r in rows] == [3, 1, 1, 22]
    assert [r["gopher_quality_reason"] for r in rows] == [
        None,
        "not_enough_stop_words",
        "not_enough_stop_words",
        None,
    ]
    assert reason_of(GopherQuality, de, "de", stop_words={"de": ["und"]}, min_stop_words=1) is None


def test_languages_without_a_stop_word_list_skip_the_rule():
    text = "\n".join(DE)  # labelled with a code spaCy knows nothing about
    rows, stage = annotated(GopherQuality, [text, text], ["qq", "qq"])
    assert [r["gopher_quality_reason"] for r in rows] == [None, None]
    assert [r["gopher_quality_stop_words"] for r in rows] == [None, None]
    assert stage.stats.extra["no_stop_words_list"] == {"qq": 2}
    # a configured list for that code applies
    assert reason_of(GopherQuality, text, "qq", stop_words={"qq": ["the"]}) == "not_enough_stop_words"


def test_configured_stop_words_for_a_language_spacy_cannot_split():
    # Korean needs a segmenter spaCy does not have here, so words come from its neutral rules;
    # a list configured for "ko" must still be the one used
    ko = "\n".join(KO)
    rows, _ = annotated(
        GopherQuality, [ko], ["ko"], stop_words={"ko": ["모든", "어느", "그"]}, min_avg_word_length=2
    )
    assert rows[0]["gopher_quality_stop_words"] == 3
    assert reason_of(GopherQuality, ko, "ko", stop_words={"ko": ["그리고"]}, min_avg_word_length=2) == (
        "not_enough_stop_words"
    )


UNSEGMENTED = ["\n".join(ZH), "\n".join(JA), "\n".join(TH)]


@pytest.mark.parametrize("cls", FILTERS, ids=[c.name for c in FILTERS])
def test_unsegmented_scripts_are_kept_unjudged(cls):
    stage = make(cls)
    reasons, out, _ = run(stage, UNSEGMENTED, ["zh", "ja", "th"])
    assert reasons == [None, None, None]
    assert out.column("text").to_pylist() == UNSEGMENTED
    assert stage.stats.extra["unsegmented_kept"] == {"zh": 1, "ja": 1, "th": 1}
    # by script, without a label or with a wrong one
    stage = make(cls)
    assert run(stage, UNSEGMENTED)[0] == [None, None, None]
    assert stage.stats.extra["unsegmented_kept"] == {"unlabelled": 3}
    stage = make(cls)
    assert run(stage, UNSEGMENTED, ["en", "en", "de"])[0] == [None, None, None]
    assert stage.stats.extra["unsegmented_kept"] == {"en": 2, "de": 1}


@pytest.mark.parametrize("cls", FILTERS, ids=[c.name for c in FILTERS])
def test_unsegmented_drop(cls):
    stage = make(cls, unsegmented="drop")
    reasons, _, runner = run(stage, [*UNSEGMENTED, "\n".join(JA)], ["zh", "ja", None, "en"])
    assert reasons == ["unsegmented_script"] * 4
    assert "unsegmented_kept" not in stage.stats.extra
    assert len(runner.samples) == 4


def test_korean_and_quoted_cjk_are_judged():
    # Korean writes spaces between words; a German page quoting two city names is German
    de = "\n".join(DE) + "\nDie Spiele fanden in Tokio (東京) und Peking (北京) statt."
    stage = make(GopherQuality, unsegmented="drop")
    reasons, _, _ = run(stage, ["\n".join(KO), de], ["ko", "de"])
    assert reasons == ["short_mean_word_length", None]  # Korean words are short: judged, not skipped
    assert "unsegmented_kept" not in stage.stats.extra


def test_language_parameter_of_an_unsegmented_language():
    # a pipeline configured for Japanese or Chinese (no language column) meeting other pages
    stage = make(GopherQuality, language="ja")
    # the English page is judged with Japanese stop words, as configured
    assert run(stage, [WORDS_50, "\n".join(JA)])[0] == ["not_enough_stop_words", None]
    assert stage.stats.extra["unsegmented_kept"] == {"unlabelled": 1}


def test_language_parameter_zh_with_a_latin_page():
    assert reason_of(FineWebQuality, "\n".join(EN), language="zh") is None


# --- annotate mode --------------------------------------------------------------------------------

SCORE_COLUMNS = {
    GopherQuality: {
        "n_words": pa.int64(),
        "mean_word_length": pa.float64(),
        "hash_ratio": pa.float64(),
        "ellipsis_ratio": pa.float64(),
        "bullet_lines_ratio": pa.float64(),
        "ellipsis_lines_ratio": pa.float64(),
        "alpha_words_ratio": pa.float64(),
        "stop_words": pa.int64(),
    },
    GopherRepetition: {
        name: pa.float64()
        for name in [
            "dup_para_frac",
            "dup_para_char_frac",
            "dup_line_frac",
            "dup_line_char_frac",
            "top_2_gram_char_frac",
            "top_3_gram_char_frac",
            "top_4_gram_char_frac",
            *(f"dup_{n}_gram_char_frac" for n in range(5, 11)),
        ]
    },
    C4Quality: {
        "lines": pa.int64(),
        "lines_removed": pa.int64(),
        "sentences": pa.int64(),
        "lorem_ipsum": pa.bool_(),
        "curly_bracket": pa.bool_(),
    },
    FineWebQuality: {
        "line_punct_ratio": pa.float64(),
        "short_line_ratio": pa.float64(),
        "char_dup_ratio": pa.float64(),
        "newline_ratio": pa.float64(),
    },
}


@pytest.mark.parametrize("cls", FILTERS, ids=[c.name for c in FILTERS])
def test_annotate_mode(cls):
    cases = [c for c in CASES if c.stage is cls and c.parity]
    texts = [c.text for c in cases] + ["", UNSEGMENTED[0]]
    languages = [c.language for c in cases] + [None, "zh"]
    filter_reasons = run(make(cls), texts, languages)[0]
    assert filter_reasons == [c.reason for c in cases] + ["empty", None]

    stage = make(cls, mode="annotate")
    reasons, out, runner = run(stage, texts, languages)
    assert reasons == [None] * len(texts) and runner.samples == []
    assert (stage.stats.docs_in, stage.stats.docs_out, dict(stage.stats.dropped)) == (
        len(texts),
        len(texts),
        {},
    )
    assert stage.stats.extra["would_drop"] == dict(Counter(r for r in filter_reasons if r))
    assert out.column("text").to_pylist() == texts  # c4_quality too: annotating never edits
    expected = {f"{cls.name}_{name}": type_ for name, type_ in SCORE_COLUMNS[cls].items()}
    expected[f"{cls.name}_reason"] = pa.string()
    assert out.schema.names == ["id", "text", "language", *expected]
    assert {name: out.schema.field(name).type for name in expected} == expected
    rows = out.to_pylist()
    assert [r[f"{cls.name}_reason"] for r in rows] == filter_reasons
    for case, row in zip(cases, rows):
        assert {k: row[f"{cls.name}_{k}"] for k in case.scores} == case.scores, case.id
        # the scores of a judged row are all there (stop words: every language here has a list)
        assert all(row[name] is not None for name in expected if name != f"{cls.name}_reason"), case.id
    for row in rows[-2:]:  # empty and unsegmented rows are not scored
        assert [row[name] for name in expected][:-1] == [None] * (len(expected) - 1)

    # annotating again replaces the columns, values unchanged
    out2 = StageRunner(make(cls, mode="annotate"))(out)
    assert out2.schema.names == out.schema.names
    assert out2.to_pylist() == rows


def test_annotate_scores_equal_datatrove_arithmetic():
    """gopher_repetition's numpy n-gram scores equal datatrove's string-based functions."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )
    from datatrove.utils.text import split_into_words

    cases = [c for c in CASES if c.stage is GopherRepetition]
    # ties: "to New", "New York" and "in New" all twice; the first seen wins (Counter.most_common)
    tie = "Flights to New York and hotels in New York. Trains to New Jersey and buses in New Haven."
    texts = [c.text for c in cases] + [tie, "Just one line here", "Two words"]
    languages = [c.language or "en" for c in cases] + ["en"] * 3
    rows, _ = annotated(GopherRepetition, texts, languages)
    for text, language, row in zip(texts, languages, rows):
        words = split_into_words(text, language)
        for n in (2, 3, 4):
            grams = get_n_grams(words, n)
            expected = find_top_duplicate(grams) / len(text) if grams else None
            assert row[f"gopher_repetition_top_{n}_gram_char_frac"] == expected, (text[:30], n)
        for n in range(5, 11):
            assert row[f"gopher_repetition_dup_{n}_gram_char_frac"] == find_all_duplicate(words, n) / len(
                text
            )


def test_annotate_custom_n_grams_and_params_in_columns():
    rows, _ = annotated(GopherRepetition, [SEO], top_n_grams={2: 0.25, 5: 0.1}, dup_n_grams={6: 0.5})
    names = [k for k in rows[0] if k.startswith("gopher_repetition_")]
    assert names == [
        "gopher_repetition_dup_para_frac",
        "gopher_repetition_dup_para_char_frac",
        "gopher_repetition_dup_line_frac",
        "gopher_repetition_dup_line_char_frac",
        "gopher_repetition_top_2_gram_char_frac",
        "gopher_repetition_top_5_gram_char_frac",
        "gopher_repetition_dup_6_gram_char_frac",
        "gopher_repetition_reason",
    ]
    assert rows[0]["gopher_repetition_reason"] is None


def test_annotate_all_four_in_a_row_on_a_multilingual_batch():
    texts = ["\n".join(UDHR[lang]) for lang in UDHR] + [SHOE_ONE_STOP_WORD, ADS_4, LOREM, DOWNLOADS_SHORTER]
    languages = [*UDHR, "en", "en", "en", "en"]
    columns = {"id": [str(i) for i in range(len(texts))], "text": texts, "language": languages}
    batch = pa.RecordBatch.from_pydict(columns)
    runners = [StageRunner(make(cls, mode="annotate")) for cls in FILTERS]
    for runner in runners:
        batch = runner(batch)
    assert batch.num_rows == len(texts)
    assert batch.column("text").to_pylist() == texts
    reasons = {cls.name: batch.column(f"{cls.name}_reason").to_pylist() for cls in FILTERS}
    assert reasons["gopher_quality"][-4:] == ["not_enough_stop_words", None, None, "short_doc"]
    assert reasons["gopher_repetition"][-4:] == [None, "dup_para_frac", None, None]
    few = "too_few_sentences"
    assert reasons["c4_quality"] == [None, None, few, few, few, few, None, None, "lorem_ipsum", few]
    assert reasons["fineweb_quality"][-4:] == [None, "char_dup_ratio", None, "list_ratio"]
    assert all(r.stats.dropped == Counter() for r in runners)


# --- stage mechanics ------------------------------------------------------------------------------


def test_text_column_is_required():
    with pytest.raises(ValueError, match="needs a 'text' column"):
        make(GopherQuality).transform(pa.RecordBatch.from_pydict({"html": ["<p>x</p>"]}))


def test_rows_keep_their_columns_and_order():
    stage = make(FineWebQuality)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b", "c"],
            "url": ["https://un.org/udhr", "https://example.org/links", "https://example.org/x"],
            "text": ["\n".join(EN), DOWNLOADS_SHORTER, RECIPE],
            "language": ["en", None, "en"],
        }
    )
    out = StageRunner(stage)(batch)
    assert out.schema == batch.schema
    assert out.to_pydict() == batch.filter(pa.array([True, False, True])).to_pydict()


# --- configuration --------------------------------------------------------------------------------


def _config(tmp_path, stages: list) -> str:
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"id": "1", "text": "x"}) + "\n")
    return write_config(
        tmp_path / "pipelines.yaml",
        {
            "q": {
                "input": {"format": "jsonl", "paths": [str(data)]},
                "output": str(tmp_path / "out"),
                "stages": stages,
            }
        },
    )


def test_config_accepts_quality_stages(tmp_path):
    stages = [
        {"gopher_repetition": {"top_n_grams": {2: 0.25}, "mode": "annotate"}},
        {"gopher_quality": {"stop_words": {"de": ["und", "der"]}, "min_doc_words": None}},
        {"c4_quality": {"filter_no_terminal_punct": True}},
        {"fineweb_quality": {"unsegmented": "drop", "language": "de"}},
    ]
    (spec,) = load_pipelines(_config(tmp_path, stages))
    params = {s.name: s.params for s in spec.stages}
    assert params["gopher_repetition"].top_n_grams == {2: 0.25}
    assert params["gopher_quality"].stop_words == {"de": ["und", "der"]}
    assert params["gopher_quality"].min_doc_words is None
    assert params["gopher_quality"].max_doc_words == 100_000
    assert params["c4_quality"].min_num_sentences == 5
    assert params["fineweb_quality"].short_line_thr == 0.67


@pytest.mark.parametrize(
    ("stage", "params", "words"),
    [
        ("gopher_quality", {"min_doc_word": 10}, ["'min_doc_word'", "min_doc_words"]),
        ("gopher_quality", {"mode": "drop"}, ["'mode'", "'drop'"]),
        ("c4_quality", {"unsegmented": "skip"}, ["'unsegmented'", "'skip'"]),
        ("fineweb_quality", {"short_line_thr": "high"}, ["'short_line_thr'", "'high'"]),
        ("gopher_repetition", {"top_n_grams": {"two": 0.2}}, ["top_n_grams"]),
        ("gopher_quality", {"stop_words": "the"}, ["stop_words"]),
    ],
)
def test_config_errors(tmp_path, stage, params, words):
    with pytest.raises(ConfigError) as err:
        load_pipelines(_config(tmp_path, [{stage: params}]))
    message = str(err.value)
    assert f"'{stage}'" in message
    for word in words:
        assert word in message


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_run(tmp_path):
    records = [
        {"id": "page", "text": c4_page(pixel=False), "url": "https://example.org/udhr"},
        {"id": "de", "text": "\n".join(DE), "language": "de"},
        {"id": "zh", "text": "\n".join(ZH), "language": "zh"},
        {"id": "ads", "text": ADS_4},
        {"id": "shoe", "text": SHOE_ONE_STOP_WORD},
        {"id": "lorem", "text": LOREM},
        {"id": "headlines", "text": HEADLINES_2_PUNCT},
        {"id": "blank", "text": "  \n "},
    ]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out = tmp_path / "run"
    stages = [{"gopher_repetition": {}}, {"gopher_quality": {}}, {"c4_quality": {}}, {"fineweb_quality": {}}]
    cfg = write_config(
        tmp_path / "p.yaml",
        {"q": {"input": {"format": "jsonl", "paths": [str(data)]}, "output": str(out), "stages": stages}},
    )
    res = winnow("run", "q", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]

    docs = {d["id"]: d for d in read_docs(out)}
    assert sorted(docs) == ["de", "page", "zh"]
    assert docs["page"]["text"] == PAGE_CLEAN
    assert docs["page"]["url"] == "https://example.org/udhr"
    assert docs["de"]["text"] == "\n".join(DE) and docs["zh"]["text"] == "\n".join(ZH)

    stats = {s["name"]: s for s in json.loads((out / "stats.json").read_text())}
    expected_drops = {
        "gopher_repetition": {"dup_para_frac": 1, "empty": 1},
        "gopher_quality": {"not_enough_stop_words": 1},
        "c4_quality": {"lorem_ipsum": 1},
        "fineweb_quality": {"line_punct_ratio": 1},
    }
    for name, dropped in expected_drops.items():
        assert stats[name]["dropped"] == dropped, name
        assert stats[name]["extra"]["unsegmented_kept"] == {"zh": 1}, name
        # every document entering a stage with text is in its length histogram, in the right bucket
        assert sum(stats[name]["text_chars_in"].values()) == stats[name]["docs_in"], name
        rows = pa.concat_tables(pq.read_table(p) for p in sorted((out / "removed" / name).glob("*.parquet")))
        reasons = Counter(r["reason"] for r in rows.to_pylist())
        assert {k: v for k, v in reasons.items() if not k.startswith("changed:")} == dropped, name
    assert stats["c4_quality"]["extra"]["lines_removed"] == {
        "javascript": 1,
        "policy": 2,
        "too_few_words": 2,
    }
    assert stats["fineweb_quality"]["docs_out"] == 3
    lo = 2 ** (len(LOREM).bit_length() - 1)
    assert stats["gopher_repetition"]["text_chars_in"][str(lo)] >= 1  # the lorem page, len in [lo, 2lo)
    removed = pq.read_table(next((out / "removed" / "c4_quality").glob("*.parquet"))).to_pylist()
    assert [(r["id"], r["text"]) for r in removed if r["reason"] == "lorem_ipsum"] == [("lorem", LOREM)]
    # the page C4 rewrote is there as a before/after sample, and counted
    changed = [r for r in removed if r["reason"] == "changed:lines_removed"]
    assert [r["id"] for r in changed] == ["page"]
    assert PAGE_CLEAN.startswith(changed[0]["after"][:100]) and changed[0]["before"] != changed[0]["after"]
    assert stats["c4_quality"]["extra"]["docs_changed"] == 1
