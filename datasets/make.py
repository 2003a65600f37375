"""Regenerate the course datasets, deterministically, from scikit-learn, Faker and our own text.

    python datasets/make.py                 # rewrite every set in datasets/
    python datasets/make.py --out DIR digits corpus    # only some sets, into another folder

Running it twice gives byte-identical files (the tests check this).
"""
from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKER_VERSION = "40.63.0"  # the surname lists depend on it; see README.md


# --- digits --------------------------------------------------------------------------------------------------
def make_digits(out: Path) -> None:
    """scikit-learn's 1797 8x8 digits as grayscale PNGs in ImageFolder trees, plus train.csv / test.csv."""
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    labels = digits.target.astype(int)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist()
    splits = {"train": order[:1437], "test": order[1437:]}
    root = out / "digits"
    for split, indices in splits.items():
        rows = []
        for i in sorted(indices):
            name = f"{split}/{labels[i]}/{i:04d}.png"
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(images[i], mode="L").save(buf, format="PNG", compress_level=9)  # no metadata chunks
            path.write_bytes(buf.getvalue())
            rows.append((name, int(labels[i])))
        _write_csv(root / f"{split}.csv", ["filename", "label"], rows)


# --- surnames ------------------------------------------------------------------------------------------------
SURNAME_LOCALES = {
    "Czech": ["cs_CZ"],
    "Dutch": ["nl_NL"],
    "English": ["en_GB", "en_US"],
    "French": ["fr_FR"],
    "German": ["de_DE"],
    "Italian": ["it_IT"],
    "Polish": ["pl_PL"],
    "Spanish": ["es_ES"],
}
# Where a locale has gendered surnames we take the masculine (or unisex) forms, so that one family name is not
# listed twice (Novák / Nováková).
_SURNAME_FIELDS = ["last_names", "last_names_male", "unisex_last_names", "male_last_names"]  # [1:]: gendered


def make_surnames(out: Path) -> None:
    """One file per language: the Faker surnames of its locales, letters only, in none of the other languages."""
    import faker
    from faker import Faker

    if faker.VERSION != FAKER_VERSION:
        print(f"warning: Faker {faker.VERSION}, the shipped lists come from {FAKER_VERSION}", file=sys.stderr)
    names = {}
    for language, locales in SURNAME_LOCALES.items():
        found = set()
        for locale in locales:
            provider = Faker(locale).provider("faker.providers.person")
            own = vars(type(provider))  # pl_PL inherits a placeholder `last_names` ("Doe") it never uses
            fields = [f for f in _SURNAME_FIELDS[1:] if f in own] or ["last_names"]
            for field in fields:
                found |= {n for n in getattr(provider, field) if len(n) >= 2 and n.isalpha()}
        names[language] = found
    for language, found in names.items():
        others = set().union(*(v for k, v in names.items() if k != language))
        keep = sorted(found - others)  # ambiguous names (in two languages) are dropped from both
        path = out / "surnames" / f"{language}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(n + "\n" for n in keep), encoding="utf-8")


# --- corpus --------------------------------------------------------------------------------------------------
# Our own small world: the village of Pellmoor, its people and their days. Everything below is written for this
# course; the generator only recombines it.
PEOPLE = [("Ada", "the baker"), ("Bram", "the miller"), ("Corin", "the smith"), ("Dessa", "the weaver"),
          ("Edmer", "the fisher"), ("Fenna", "the potter"), ("Gil", "the shepherd"), ("Hollis", "the carpenter"),
          ("Isolde", "the beekeeper"), ("Jory", "the ferryman"), ("Katrin", "the herbalist"),
          ("Lune", "the schoolteacher"), ("Marek", "the innkeeper"), ("Nell", "the cooper")]
PLACES = ["the mill", "the bridge", "the market square", "the old well", "the inn", "the orchard",
          "the river bank", "the chapel", "the bakery", "the forge", "the meadow", "the schoolhouse",
          "the east road", "the harbour", "the hill path"]
TIMES = ["at dawn", "in the morning", "at noon", "in the afternoon", "at dusk", "in the evening",
         "before supper", "after the bell"]
WEATHER = ["The sky was clear", "Rain fell all day", "A cold wind came down from the hills",
           "Fog lay on the river", "The sun was warm", "Snow covered the roofs", "Clouds hung low",
           "A storm passed over the valley"]
GOODS = ["bread", "flour", "nails", "wool", "fish", "jugs", "honey", "apples", "rope", "candles", "cheese",
         "barrels", "eggs", "firewood", "salt"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
FEELINGS = ["glad", "tired", "worried", "cheerful", "quiet", "proud", "hungry", "restless"]
SEASONS = ["spring", "summer", "autumn", "winter"]
VERBS = ["walked to", "hurried to", "went down to", "climbed up to", "waited at", "sat at"]
PHRASES = ["Many hands make the work light.", "The river keeps its own time.",
           "Bread in the morning, stories at night.", "A closed door keeps the warmth in.",
           "Count the sheep twice before you sleep."]
RECIPE_DISHES = [("barley soup", ["barley", "onions", "carrots", "salt"]),
                 ("honey cake", ["flour", "honey", "eggs", "butter"]),
                 ("river stew", ["fish", "potatoes", "leeks", "cream"]),
                 ("apple pie", ["apples", "flour", "butter", "sugar"]),
                 ("herb bread", ["flour", "yeast", "thyme", "water"])]


def _sentence(rng: random.Random, season: str) -> str:
    """One sentence of the chronicle, from one of a dozen patterns."""
    name, job = rng.choice(PEOPLE)
    other, other_job = rng.choice([p for p in PEOPLE if p[0] != name])
    place, time, good, n = rng.choice(PLACES), rng.choice(TIMES), rng.choice(GOODS), rng.choice(NUMBERS)
    kind = rng.randrange(12)
    if kind == 0:
        return f"{name} {job} {rng.choice(VERBS)} {place} {time}."
    if kind == 1:
        return f"{name} sold {n} baskets of {good} to {other} {other_job}."
    if kind == 2:
        return f"{rng.choice(WEATHER)}, so {name} stayed near {place}."
    if kind == 3:
        return f"{name} and {other} met at {place} {time} and talked about the {season} fair."
    if kind == 4:
        return f"{name} was {rng.choice(FEELINGS)}, because the {good} had not come."
    if kind == 5:
        return f"\"Have you seen my {good}?\" asked {name}. \"No,\" said {other}, \"try {place}.\""
    if kind == 6:
        return f"{time.capitalize()}, {name} {job} carried {n} sacks of {good} across {place}."
    if kind == 7:
        return f"{other} {other_job} said: \"{rng.choice(PHRASES)}\""
    if kind == 8:
        return f"The price of {good} rose to {n} coins, and {name} grumbled about it {time}."
    if kind == 9:
        return f"{name} fixed the roof of {place} while {other} held the ladder."
    if kind == 10:
        return f"Nobody saw {name} {time}; some said {name} had gone to {place}."
    return f"{name} {job} counted {n} {good} and wrote the number in the village book."


def _recipe(rng: random.Random) -> str:
    """A short recipe in a fixed layout, so that the model can learn the layout too."""
    dish, items = rng.choice(RECIPE_DISHES)
    name, job = rng.choice(PEOPLE)
    lines = [f"Recipe: {dish}, as {name} {job} makes it.", "You need:"]
    lines += [f"- {rng.choice(NUMBERS)} handfuls of {item}" for item in items]
    lines += [f"Cook it slowly {rng.choice(TIMES)} and share it with {rng.choice(PEOPLE)[0]}.", ""]
    return "\n".join(lines)


def make_corpus(out: Path, target_bytes: int = 320_000) -> None:
    """A chronicle of Pellmoor, day by day, with a recipe now and then: about 320 KB of plain ASCII text."""
    rng = random.Random(20240601)
    parts, size, day = [], 0, 1
    while size < target_bytes:
        season = SEASONS[(day // 30) % 4]
        entry = [f"Day {day} of {season} in Pellmoor."]
        entry += [_sentence(rng, season) for _ in range(rng.randint(3, 7))]
        text = "\n".join(entry) + "\n\n"
        if day % 9 == 0:
            text += _recipe(rng) + "\n"
        parts.append(text)
        size += len(text)
        day += 1
    path = out / "corpus" / "tiny_corpus.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="ascii", newline="\n")


# --- sentiment -----------------------------------------------------------------------------------------------
THINGS = ["the soup", "the film", "the hotel room", "the new phone", "this book", "the concert", "the bus ride",
          "the coffee", "the service", "the game", "our holiday", "the museum", "the lecture", "the pizza",
          "the app", "the garden", "the train", "the jacket", "the song", "the show"]
GOOD_WORDS = ["wonderful", "delightful", "excellent", "lovely", "great", "charming", "superb", "pleasant",
              "fantastic", "brilliant"]
BAD_WORDS = ["awful", "dreadful", "terrible", "boring", "disappointing", "horrible", "dull", "poor", "annoying",
             "miserable"]
GOOD_TAILS = ["I would gladly go back", "everyone left smiling", "it made my day", "I recommend it to anyone",
              "worth every penny", "I want more of it"]
BAD_TAILS = ["I want my money back", "never again", "it ruined my evening", "I left early",
             "a complete waste of time", "I regret it"]
INTENSIFIERS = ["", "really ", "truly ", "quite ", "very ", "absolutely "]


def _review(rng: random.Random, positive: bool) -> str:
    """One short review sentence; some patterns use negation so that single words are not enough."""
    thing = rng.choice(THINGS)
    word, other = (rng.choice(GOOD_WORDS), rng.choice(BAD_WORDS)) if positive else \
        (rng.choice(BAD_WORDS), rng.choice(GOOD_WORDS))
    tail = rng.choice(GOOD_TAILS if positive else BAD_TAILS)
    kind = rng.randrange(6)
    if kind == 0:
        text = f"{thing} was {rng.choice(INTENSIFIERS)}{word}."
    elif kind == 1:
        text = f"{thing} was {rng.choice(INTENSIFIERS)}{word}, {tail}."
    elif kind == 2:
        text = f"{thing} was not {other} at all, in fact it was {word}."
    elif kind == 3:
        text = f"I expected something {other}, but {thing} turned out {word}."
    elif kind == 4:
        text = f"what a {word} experience {thing} was."
    else:
        text = f"{tail}: {thing} was {word}."
    return text[0].upper() + text[1:]


def make_sentiment(out: Path, per_label: int = 250, test_per_label: int = 50) -> None:
    """Balanced labelled sentences from our own templates: sentences.csv (all), train.csv and test.csv."""
    rng = random.Random(7)
    rows = []
    for label in (1, 0):
        seen = set()
        while len(seen) < per_label:
            text = _review(rng, label == 1)
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    test, counts = [], {0: 0, 1: 0}
    for row in rows:  # the first 50 of each label (in shuffled order) go to the test set
        if counts[row[1]] < test_per_label:
            counts[row[1]] += 1
            test.append(row)
    test_set = set(test)
    train = [r for r in rows if r not in test_set]
    root = out / "sentiment"
    _write_csv(root / "sentences.csv", ["text", "label"], rows)
    _write_csv(root / "train.csv", ["text", "label"], train)
    _write_csv(root / "test.csv", ["text", "label"], test)


# --- helpers -------------------------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


MAKERS = {"digits": make_digits, "surnames": make_surnames, "corpus": make_corpus, "sentiment": make_sentiment}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help=f"which sets, among {', '.join(MAKERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: datasets/)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sets if s not in MAKERS]
    if unknown:
        parser.error(f"unknown set {unknown[0]!r}; choose among {', '.join(MAKERS)}")
    for name in args.sets or MAKERS:
        MAKERS[name](args.out)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
