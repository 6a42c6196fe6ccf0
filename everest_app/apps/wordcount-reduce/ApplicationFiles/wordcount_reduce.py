"""Reduce step of the word-frequency example: merge one range of words over all map outputs.

Usage: python3 wordcount_reduce.py PART PARTS

Reads every file in counts/ (``<word> <count>`` lines) and splits.txt (one line of sample
words per map task). The boundaries are the samples, merged and sorted, cut into PARTS
equal runs: every reduce task computes the same ones. This task keeps the words w with
boundary[PART-1] <= w < boundary[PART] and writes result.txt (``<word> <total>`` lines,
sorted), words.txt, total.txt, first.txt and last.txt. Standard library only.
"""
import os
import sys
from collections import Counter


def boundaries(sample_lines, parts):
    """``parts - 1`` words cutting the merged sample into runs of equal length."""
    sample = sorted(word for line in sample_lines for word in line.split())
    if not sample:
        return []
    return [sample[(k * len(sample)) // parts] for k in range(1, parts)]


def in_part(word, cuts, part):
    """Whether ``word`` belongs to range ``part`` given the boundary words ``cuts``."""
    low = cuts[part - 1] if part > 0 else None
    high = cuts[part] if part < len(cuts) else None
    return (low is None or word >= low) and (high is None or word < high)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: wordcount_reduce.py PART PARTS")
    part, parts = int(sys.argv[1]), int(sys.argv[2])
    if not 0 <= part < parts:
        sys.exit(f"part must be in [0, parts), got {part} of {parts}")
    with open("splits.txt", encoding="utf-8") as f:
        cuts = boundaries(f.read().splitlines(), parts)
    totals = Counter()
    names = sorted(os.listdir("counts")) if os.path.isdir("counts") else []
    for name in names:
        with open(os.path.join("counts", name), encoding="utf-8") as f:
            for line in f:
                word, _, count = line.rstrip("\n").rpartition(" ")
                if word and in_part(word, cuts, part):
                    totals[word] += int(count)
    ordered = sorted(totals)
    with open("result.txt", "w", encoding="utf-8") as f:
        for word in ordered:
            f.write(f"{word} {totals[word]}\n")
    with open("words.txt", "w") as f:
        f.write(f"{len(ordered)}\n")
    with open("total.txt", "w") as f:
        f.write(f"{sum(totals.values())}\n")
    if ordered:
        with open("first.txt", "w", encoding="utf-8") as f:
            f.write(ordered[0])
        with open("last.txt", "w", encoding="utf-8") as f:
            f.write(ordered[-1])
    print(f"part {part} of {parts}: {len(names)} files, {len(ordered)} distinct words")


if __name__ == "__main__":
    main()
