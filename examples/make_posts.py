"""Generate the word-frequency example's input: files of social-media posts as JSON lines.

    python make_posts.py DATA_DIR [--files 10] [--posts 4000] [--seed 2021]

writes ``DATA_DIR/posts-00.json`` ... (one JSON object a line, shaped like a tweet: ``id``,
``created_at``, ``user``, ``lang``, ``text``) and ``DATA_DIR/truth.txt``, the exact number
of times each word was put into the texts (``<word> <count>`` lines, sorted), against which
the map-reduce result is checked.

Words follow a Zipf law over a made-up Russian and English vocabulary with word forms
(a stem plus an ending) and rare one-off neologisms; texts also hold what the word counter
must skip: links, @mentions, numbers, punctuation, emoji; hashtags count as their word.
File sizes vary by about +-25 %, as in the paper's data. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
from collections import Counter
from pathlib import Path

RU_SYLLABLES = ["ка", "ра", "то", "ми", "ло", "не", "ви", "да", "сто", "при", "ве", "ну",
                "зо", "ре", "па", "ли", "до", "мо", "ко", "сла", "гра", "бу", "жи", "пе"]
RU_ENDINGS = ["", "а", "ы", "ов", "ами", "е", "ой", "ая", "ый", "ть", "ет", "ют", "ла"]
EN_SYLLABLES = ["ta", "ro", "mi", "ne", "sa", "lo", "ver", "con", "pre", "li", "da", "ex",
                "ma", "po", "tri", "ble", "for", "ge", "ny", "zo"]
EN_ENDINGS = ["", "s", "ed", "ing", "er", "ly"]
EMOJI = ["😀", "🔥", "👍", "🎉", "🤔", "❤️"]
PUNCT = [",", ".", "!", "?", "...", " -", ":"]


def vocabulary(rng: random.Random, stems: int = 3000) -> list[str]:
    """Word forms: ``stems`` stems per language, each with a few endings, shuffled."""
    words: set[str] = set()
    for syllables, endings in ((RU_SYLLABLES, RU_ENDINGS), (EN_SYLLABLES, EN_ENDINGS)):
        made = 0
        while made < stems:
            stem = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
            forms = {stem + e for e in rng.sample(endings, rng.randint(1, 4))}
            if forms - words:
                words |= forms
                made += 1
    ordered = sorted(words)
    rng.shuffle(ordered)  # the rank of a word must not follow its spelling
    return ordered


class ZipfWords:
    """Draw words with probability proportional to 1 / rank ** s."""

    def __init__(self, words: list[str], rng: random.Random, s: float = 1.05):
        self.words = words
        self.rng = rng
        self.cumulative = list(itertools.accumulate(1 / (r ** s) for r in
                                                    range(1, len(words) + 1)))

    def draw(self) -> str:
        x = self.rng.random() * self.cumulative[-1]
        return self.words[bisect.bisect_left(self.cumulative, x)]


def neologism(rng: random.Random) -> str:
    syllables = rng.choice((RU_SYLLABLES, EN_SYLLABLES))
    return "".join(rng.choice(syllables) for _ in range(rng.randint(4, 6)))


def post_text(rng: random.Random, zipf: ZipfWords, counted: Counter) -> str:
    """One post's text; every word put in it is added to ``counted``."""
    parts: list[str] = []
    for i in range(rng.randint(4, 25)):
        word = neologism(rng) if rng.random() < 0.004 else zipf.draw()
        counted[word] += 1
        roll = rng.random()
        if roll < 0.04:
            token = "#" + word
        elif i == 0 or roll < 0.1:
            token = word.capitalize()
        else:
            token = word
        if rng.random() < 0.12:
            token += rng.choice(PUNCT)
        parts.append(token)
        extra = rng.random()
        if extra < 0.02:
            parts.append(f"@user_{rng.randint(1, 9999)}")
        elif extra < 0.03:
            parts.append(f"https://t.co/{rng.randbytes(5).hex()}")
        elif extra < 0.04:
            parts.append(str(rng.randint(1, 2021)))
        elif extra < 0.05:
            parts.append(rng.choice(EMOJI))
    return " ".join(parts)


def make_posts(out_dir: str | Path, *, files: int = 10, posts: int = 4000,
               seed: int = 2021) -> Counter:
    """Write ``files`` files of about ``posts`` posts each into ``out_dir``.

    Returns the true word counts (also written to ``truth.txt``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    zipf = ZipfWords(vocabulary(rng), rng)
    truth: Counter = Counter()
    post_id = 1_300_000_000_000_000_000
    for n in range(files):
        count = max(1, round(posts * rng.uniform(0.75, 1.25)))
        with open(out / f"posts-{n:02d}.json", "w", encoding="utf-8") as f:
            for _ in range(count):
                post_id += rng.randint(1, 10**6)
                lang = rng.choice(("ru", "ru", "en"))
                f.write(json.dumps({
                    "id": post_id,
                    "created_at": f"2021-0{rng.randint(1, 6)}-{rng.randint(10, 28)}T"
                                  f"{rng.randint(10, 23)}:{rng.randint(10, 59)}:00Z",
                    "user": {"screen_name": f"user_{rng.randint(1, 9999)}"},
                    "lang": lang,
                    "text": post_text(rng, zipf, truth),
                }, ensure_ascii=False) + "\n")
    with open(out / "truth.txt", "w", encoding="utf-8") as f:
        for word in sorted(truth):
            f.write(f"{word} {truth[word]}\n")
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--posts", type=int, default=4000, help="posts per file, about")
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args(argv)
    truth = make_posts(args.data_dir, files=args.files, posts=args.posts, seed=args.seed)
    size = sum(p.stat().st_size for p in Path(args.data_dir).glob("posts-*.json"))
    print(f"{args.files} files, {size / 1e6:.1f} MB, {sum(truth.values())} words, "
          f"{len(truth)} distinct")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
