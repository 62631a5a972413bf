"""Sentence generators for the synthesiser: generic (en, de, fr, es, bn, with a parallel
phrase table for translation), air-traffic phraseology (en) and Banglish (bn + English
words + digit strings).

A generator draws a *key* (hashable, language-independent) and renders it per language
as a `Sentence`: `text` is the transcript, `speech` what espeak-ng is given. They differ
where the label convention differs from how the words are read, e.g. a phone number is
labelled "017 1234 5678" but read digit by digit.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Hashable

DOMAINS = ("generic", "atc", "banglish")
LANGUAGES = ("en", "de", "fr", "es", "bn")
# Which languages each domain can speak: ATC phraseology is English the world over, and
# Banglish is Bengali with English words mixed in.
DOMAIN_LANGUAGES: dict[str, tuple[str, ...]] = {
    "generic": LANGUAGES,
    "atc": ("en",),
    "banglish": ("bn",),
}


@dataclasses.dataclass(frozen=True)
class Sentence:
    text: str  # the transcript
    speech: str  # what the speech synthesiser reads


@dataclasses.dataclass(frozen=True)
class Generator:
    draw: Callable[[random.Random], Hashable]
    render: Callable[[Hashable, str], Sentence]


def get(domain: str) -> Generator:
    if domain == "generic":
        return Generator(_draw_generic, _render_generic)
    if domain == "atc":
        return Generator(_draw_atc, _render_fixed)
    if domain == "banglish":
        return Generator(_draw_banglish, _render_fixed)
    raise ValueError(f"unknown domain {domain!r} (want one of {', '.join(DOMAINS)})")


# --- generic: a parallel phrase table, one column per language (en, de, fr, es, bn) ------

_NAMES = [
    ("Anna", "আনা"), ("Peter", "পিটার"), ("Maria", "মারিয়া"), ("Thomas", "টমাস"),
    ("Laura", "লরা"), ("David", "ডেভিড"), ("Sofia", "সোফিয়া"), ("Paul", "পল"),
    ("Elena", "এলেনা"), ("Martin", "মার্টিন"), ("Clara", "ক্লারা"), ("Lucas", "লুকাস"),
    ("Julia", "জুলিয়া"), ("Felix", "ফেলিক্স"), ("Nora", "নোরা"), ("Omar", "ওমর"),
]
# (verb, object) per language; kept apart because word order differs (German puts the
# object after time and place, Bengali puts the verb last).
_ACTIONS: list[dict[str, tuple[str, str]]] = [
    {"en": ("reads", "a book"), "de": ("liest", "ein Buch"), "fr": ("lit", "un livre"),
     "es": ("lee", "un libro"), "bn": ("পড়ে", "একটি বই")},
    {"en": ("drinks", "coffee"), "de": ("trinkt", "Kaffee"), "fr": ("boit", "du café"),
     "es": ("bebe", "café"), "bn": ("খায়", "কফি")},
    {"en": ("writes", "a letter"), "de": ("schreibt", "einen Brief"), "fr": ("écrit", "une lettre"),
     "es": ("escribe", "una carta"), "bn": ("লেখে", "একটি চিঠি")},
    {"en": ("buys", "bread"), "de": ("kauft", "Brot"), "fr": ("achète", "du pain"),
     "es": ("compra", "pan"), "bn": ("কেনে", "রুটি")},
    {"en": ("eats", "an apple"), "de": ("isst", "einen Apfel"), "fr": ("mange", "une pomme"),
     "es": ("come", "una manzana"), "bn": ("খায়", "একটি আপেল")},
    {"en": ("plays", "football"), "de": ("spielt", "Fußball"), "fr": ("joue", "au football"),
     "es": ("juega", "al fútbol"), "bn": ("খেলে", "ফুটবল")},
    {"en": ("sees", "a bird"), "de": ("sieht", "einen Vogel"), "fr": ("voit", "un oiseau"),
     "es": ("ve", "un pájaro"), "bn": ("দেখে", "একটি পাখি")},
    {"en": ("cooks", "soup"), "de": ("kocht", "Suppe"), "fr": ("prépare", "une soupe"),
     "es": ("cocina", "sopa"), "bn": ("রান্না করে", "স্যুপ")},
    {"en": ("opens", "the window"), "de": ("öffnet", "das Fenster"), "fr": ("ouvre", "la fenêtre"),
     "es": ("abre", "la ventana"), "bn": ("খোলে", "জানালা")},
    {"en": ("waits for", "a friend"), "de": ("wartet", "auf einen Freund"), "fr": ("attend", "un ami"),
     "es": ("espera", "a un amigo"), "bn": ("অপেক্ষা করে", "একজন বন্ধুর জন্য")},
    {"en": ("sings", "a song"), "de": ("singt", "ein Lied"), "fr": ("chante", "une chanson"),
     "es": ("canta", "una canción"), "bn": ("গায়", "একটি গান")},
    {"en": ("finds", "a key"), "de": ("findet", "einen Schlüssel"), "fr": ("trouve", "une clé"),
     "es": ("encuentra", "una llave"), "bn": ("খুঁজে পায়", "একটি চাবি")},
    {"en": ("paints", "a picture"), "de": ("malt", "ein Bild"), "fr": ("peint", "un tableau"),
     "es": ("pinta", "un cuadro"), "bn": ("আঁকে", "একটি ছবি")},
    {"en": ("washes", "the car"), "de": ("wäscht", "das Auto"), "fr": ("lave", "la voiture"),
     "es": ("lava", "el coche"), "bn": ("ধোয়", "গাড়ি")},
    {"en": ("learns", "a new word"), "de": ("lernt", "ein neues Wort"), "fr": ("apprend", "un nouveau mot"),
     "es": ("aprende", "una palabra nueva"), "bn": ("শেখে", "একটি নতুন শব্দ")},
    {"en": ("carries", "a bag"), "de": ("trägt", "eine Tasche"), "fr": ("porte", "un sac"),
     "es": ("lleva", "una bolsa"), "bn": ("বহন করে", "একটি ব্যাগ")},
]
_PLACES: list[dict[str, str]] = [
    {"en": "in the park", "de": "im Park", "fr": "au parc", "es": "en el parque", "bn": "পার্কে"},
    {"en": "at home", "de": "zu Hause", "fr": "à la maison", "es": "en casa", "bn": "বাড়িতে"},
    {"en": "in the kitchen", "de": "in der Küche", "fr": "dans la cuisine", "es": "en la cocina", "bn": "রান্নাঘরে"},
    {"en": "at school", "de": "in der Schule", "fr": "à l'école", "es": "en la escuela", "bn": "স্কুলে"},
    {"en": "in the garden", "de": "im Garten", "fr": "dans le jardin", "es": "en el jardín", "bn": "বাগানে"},
    {"en": "at the station", "de": "am Bahnhof", "fr": "à la gare", "es": "en la estación", "bn": "স্টেশনে"},
    {"en": "in the city", "de": "in der Stadt", "fr": "en ville", "es": "en la ciudad", "bn": "শহরে"},
    {"en": "by the river", "de": "am Fluss", "fr": "près de la rivière", "es": "junto al río", "bn": "নদীর ধারে"},
    {"en": "in the office", "de": "im Büro", "fr": "au bureau", "es": "en la oficina", "bn": "অফিসে"},
    {"en": "at the market", "de": "auf dem Markt", "fr": "au marché", "es": "en el mercado", "bn": "বাজারে"},
]
_TIMES: list[dict[str, str]] = [
    {"en": "today", "de": "heute", "fr": "aujourd'hui", "es": "hoy", "bn": "আজ"},
    {"en": "every morning", "de": "jeden Morgen", "fr": "chaque matin", "es": "cada mañana", "bn": "প্রতিদিন সকালে"},
    {"en": "in the evening", "de": "am Abend", "fr": "le soir", "es": "por la tarde", "bn": "সন্ধ্যায়"},
    {"en": "on Sunday", "de": "am Sonntag", "fr": "le dimanche", "es": "el domingo", "bn": "রবিবারে"},
    {"en": "now", "de": "jetzt", "fr": "maintenant", "es": "ahora", "bn": "এখন"},
    {"en": "often", "de": "oft", "fr": "souvent", "es": "a menudo", "bn": "প্রায়ই"},
    {"en": "at noon", "de": "am Mittag", "fr": "à midi", "es": "al mediodía", "bn": "দুপুরে"},
    {"en": "on Monday", "de": "am Montag", "fr": "le lundi", "es": "el lunes", "bn": "সোমবারে"},
]


def _draw_generic(rng: random.Random) -> Hashable:
    return (
        rng.randrange(len(_NAMES)), rng.randrange(len(_ACTIONS)),
        rng.randrange(len(_PLACES)), rng.randrange(len(_TIMES)),
    )


def _render_generic(key: Hashable, lang: str) -> Sentence:
    assert isinstance(key, tuple)
    name_i, action_i, place_i, time_i = (int(part) for part in key)
    name = _NAMES[name_i][1 if lang == "bn" else 0]
    verb, obj = _ACTIONS[action_i][lang]
    place, time = _PLACES[place_i][lang], _TIMES[time_i][lang]
    if lang == "de":
        words = [name, verb, time, place, obj]
    elif lang == "bn":
        words = [name, time, place, obj, verb]
    else:
        words = [name, verb, obj, place, time]
    text = " ".join(words) + ("।" if lang == "bn" else ".")
    return Sentence(text, text)


def _render_fixed(key: Hashable, lang: str) -> Sentence:
    assert isinstance(key, Sentence)
    return key


# --- atc: controller instructions and pilot read-backs, numbers spoken digit by digit -----

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "niner"]
_AIRLINES = [
    "delta", "united", "american", "southwest", "lufthansa", "speedbird", "ryanair",
    "jetblue", "alaska", "frontier", "cactus", "skywest", "air canada", "continental",
]
_PHONETIC = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
]
_FACILITIES = ["tower", "ground", "departure", "approach", "center"]
_THOUSANDS = ["two", "three", "four", "five", "six", "seven", "eight", "niner"]


def _spoken(number: str) -> str:
    return " ".join(_DIGITS[int(d)] for d in number)


def _call_sign(rng: random.Random) -> str:
    if rng.random() < 0.2:  # general aviation: N-number, e.g. "november four two alpha bravo"
        return "november " + _spoken(f"{rng.randrange(10, 99)}") + " " + " ".join(rng.sample(_PHONETIC, 2))
    return rng.choice(_AIRLINES) + " " + _spoken(str(rng.randrange(10, 9999)))


def _runway(rng: random.Random) -> str:
    side = rng.choice(["", "", " left", " right", " center"])
    return "runway " + _spoken(f"{rng.randrange(1, 37):02d}") + side


def _instruction(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return f"turn {rng.choice(['left', 'right'])} heading " + _spoken(f"{rng.randrange(1, 73) * 5:03d}")
    if kind == 1:
        return "climb and maintain flight level " + _spoken(str(rng.randrange(10, 42) * 10))
    if kind == 2:
        return f"descend and maintain {rng.choice(_THOUSANDS)} thousand"
    if kind == 3:
        return "cleared to land " + _runway(rng)
    if kind == 4:
        return "cleared for takeoff " + _runway(rng)
    if kind == 5:
        return "hold short of " + _runway(rng)
    if kind == 6:
        return "squawk " + " ".join(_DIGITS[rng.randrange(8)] for _ in range(4))
    if kind == 7:
        return "reduce speed to " + _spoken(str(rng.randrange(16, 26) * 10)) + " knots"
    frequency = f"{rng.randrange(118, 136)}{rng.randrange(10)}"
    return f"contact {rng.choice(_FACILITIES)} " + _spoken(frequency[:3]) + " point " + _spoken(frequency[3])


def _draw_atc(rng: random.Random) -> Hashable:
    call_sign, instruction = _call_sign(rng), _instruction(rng)
    # Controllers lead with the call sign; pilots read back and end with it.
    words = f"{call_sign} {instruction}" if rng.random() < 0.6 else f"{instruction} {call_sign}"
    return Sentence(text=words.upper(), speech=words)


# --- banglish: Bengali frames with English words and digit strings ------------------------

_DEVICES = ["laptop", "phone", "internet", "printer", "computer", "charger", "router", "keyboard"]
_EVENTS = ["meeting", "class", "exam", "interview", "appointment", "presentation", "party", "flight"]
_TASKS = [("file", "send"), ("email", "check"), ("report", "submit"), ("password", "change"),
          ("ticket", "book"), ("order", "cancel"), ("form", "fill up"), ("app", "update")]
_ID_KINDS = ["account number", "order number", "customer ID", "booking number", "roll number"]
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def _spell(label: str) -> str:
    # espeak-ng reads "017" as a number; a space between digits makes it read each one.
    return " ".join(" ".join(part) if part.isalnum() else part for part in label.split(" "))


def _draw_banglish(rng: random.Random) -> Hashable:
    kind = rng.randrange(6)
    if kind == 0:
        number = f"01{rng.randrange(3, 10)} {_digits(rng, 4)} {_digits(rng, 4)}"
        return Sentence(f"আমার phone number {number}", f"আমার phone number {_spell(number)}")
    if kind == 1:
        passport = rng.choice(_LETTERS) + _digits(rng, 7)
        return Sentence(f"আমার passport number {passport}", f"আমার passport number {_spell(passport)}")
    if kind == 2:
        ident = _digits(rng, rng.randrange(5, 9))
        label = rng.choice(_ID_KINDS)
        return Sentence(f"আপনার {label} {ident} তাই না", f"আপনার {label} {_spell(ident)} তাই না")
    if kind == 3:
        hour = str(rng.randrange(1, 13))
        event = rng.choice(_EVENTS)
        day = rng.choice(["আজকে", "কালকে", "পরশু"])
        return Sentence(f"{day} {hour} টায় {event} আছে", f"{day} {hour} টায় {event} আছে")
    if kind == 4:
        thing, verb = rng.choice(_TASKS)
        who = rng.choice(["তুমি", "আপনি", "ভাই"])
        text = f"{who} {thing} টা {verb} করে দাও please"
        return Sentence(text, text)
    device = rng.choice(_DEVICES)
    since = rng.choice(["সকাল থেকে", "কাল থেকে", "দুই দিন ধরে", "এক ঘণ্টা ধরে"])
    room = _digits(rng, 3)
    text = f"room {room} এর {device} {since} কাজ করছে না"
    return Sentence(text, f"room {_spell(room)} এর {device} {since} কাজ করছে না")
