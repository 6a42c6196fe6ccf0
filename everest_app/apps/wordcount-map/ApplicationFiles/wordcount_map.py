"""Map step of the word-frequency example: count the words of one file of posts.

Usage: python3 wordcount_map.py POSTS_FILE

Writes counts-<hash>.txt (``<word> <count>`` lines sorted by word), splits.txt (64 evenly
spaced words of the sorted vocabulary, space-separated), words.txt and total.txt.
Standard library only, Python >= 3.8.
"""
import hashlib
import json
import re
import sys
from collections import Counter

URL = re.compile(r"(?:https?://|www\.)\S+")
MENTION = re.compile(r"@\w+")
WORD = re.compile(r"[^\W\d_]+")
SAMPLES = 64


def words_of(text):
    """The lower-case words of a post's text, without links and mentions."""
    text = MENTION.sub(" ", URL.sub(" ", text))
    return WORD.findall(text.lower())


def posts_in(data):
    """The posts of a file: one JSON array, or JSON lines (blank lines skipped)."""
    text = data.decode("utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: wordcount_map.py POSTS_FILE")
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    counts = Counter()
    for post in posts_in(data):
        text = post.get("text") if isinstance(post, dict) else None
        if isinstance(text, str):
            counts.update(words_of(text))
    vocabulary = sorted(counts)
    tag = hashlib.sha256(data).hexdigest()[:16]
    with open(f"counts-{tag}.txt", "w", encoding="utf-8") as f:
        for word in vocabulary:
            f.write(f"{word} {counts[word]}\n")
    n = len(vocabulary)
    sample = [vocabulary[(i * n) // SAMPLES] for i in range(1, SAMPLES)] if n else []
    with open("splits.txt", "w", encoding="utf-8") as f:
        f.write(" ".join(sample) + "\n")
    with open("words.txt", "w") as f:
        f.write(f"{n}\n")
    with open("total.txt", "w") as f:
        f.write(f"{sum(counts.values())}\n")
    print(f"{sys.argv[1]}: {sum(counts.values())} words, {n} distinct")


if __name__ == "__main__":
    main()
