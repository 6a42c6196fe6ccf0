"""The example applications' programs, run as their tasks would be, without a server.

Each test stages a work directory the way the application's input mappings say and runs
the script with this Python; the end-to-end runs through Everest are in test_examples.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from everest_app import descriptor

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "everest_app" / "apps"
sys.path.insert(0, str(REPO / "examples"))
from make_posts import make_posts  # noqa: E402


def run_script(app: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    application = descriptor.load(APPS / app)
    application.copy_files_to(work)
    script = application.command.split()[1]
    return subprocess.run([sys.executable, script, *args], cwd=work, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("app", ["lorenz-lyapunov", "wordcount-map", "wordcount-reduce"])
def test_descriptions_load_validate_and_export(app, tmp_path):
    application = descriptor.load(APPS / app)
    assert application.alias == app
    again = descriptor.load(descriptor.export_zip(application, tmp_path / f"{app}.zip"))
    assert again.to_dict() == application.to_dict()
    assert again.file_names() == application.file_names()


def lyapunov(tmp_path, r, s, b, t=None):
    for name, value in (("rho", r), ("sigma", s), ("beta", b), ("time", t)):
        if value is not None:
            (tmp_path / f"{name}.txt").write_text(repr(value))
    done = run_script("lorenz-lyapunov", tmp_path)
    assert done.returncode == 0, done.stderr
    return [float((tmp_path / f"lap{i}.txt").read_text()) for i in (1, 2, 3)], done.stdout


def test_lorenz_classic_parameters_give_the_known_spectrum(tmp_path):
    (l1, l2, l3), out = lyapunov(tmp_path, 28, 10, 8 / 3, 200)
    assert l1 == pytest.approx(0.906, abs=0.05)
    assert l2 == pytest.approx(0.0, abs=0.05)
    assert l3 == pytest.approx(-14.572, abs=0.05)
    assert l1 + l2 + l3 == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)
    assert "L1=" in out


def test_lorenz_below_the_chaotic_threshold_has_no_positive_exponent(tmp_path):
    (l1, l2, l3), _ = lyapunov(tmp_path, 10, 10, 8 / 3, 50)
    assert l1 < 0 and l1 >= l2 >= l3
    assert l1 + l2 + l3 == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)


def test_lorenz_without_an_input_fails_with_a_message(tmp_path):
    (tmp_path / "rho.txt").write_text("28")
    done = run_script("lorenz-lyapunov", tmp_path)
    assert done.returncode != 0 and "missing input file sigma.txt" in done.stderr


def test_map_and_reduce_reproduce_the_generated_counts_in_order(tmp_path):
    truth = make_posts(tmp_path / "data", files=3, posts=150, seed=7)
    maps = []
    for n, posts in enumerate(sorted((tmp_path / "data").glob("posts-*.json"))):
        work = tmp_path / f"map{n}"
        work.mkdir()
        (work / posts.name).write_bytes(posts.read_bytes())
        done = run_script("wordcount-map", work, posts.name)
        assert done.returncode == 0, done.stderr
        maps.append(work)
    assert sum(int((w / "total.txt").read_text()) for w in maps) == sum(truth.values())
    parts, lines = 4, []
    for part in range(parts):
        work = tmp_path / f"reduce{part}"
        (work / "counts").mkdir(parents=True)
        for m in maps:  # staged as the input mapping says: every counts file into counts/
            (counts,) = m.glob("counts-*.txt")
            (work / "counts" / counts.name).write_bytes(counts.read_bytes())
        (work / "splits.txt").write_text("".join((m / "splits.txt").read_text() for m in maps))
        done = run_script("wordcount-reduce", work, str(part), str(parts))
        assert done.returncode == 0, done.stderr
        text = (work / "result.txt").read_text(encoding="utf-8")
        assert text, f"part {part} is empty"
        lines += text.splitlines()
    words = [line.split(" ")[0] for line in lines]
    assert words == sorted(words) and len(set(words)) == len(words)
    assert {w: int(c) for w, c in (line.split(" ") for line in lines)} == dict(truth)


def test_map_skips_links_mentions_and_numbers(tmp_path):
    (tmp_path / "p.json").write_text(
        '[{"text": "Hello @bob https://t.co/x1 #World 2021 hello, мир!"}, {"id": 2}]',
        encoding="utf-8")
    done = run_script("wordcount-map", tmp_path, "p.json")
    assert done.returncode == 0, done.stderr
    (counts,) = tmp_path.glob("counts-*.txt")
    assert counts.read_text(encoding="utf-8") == "hello 2\nworld 1\nмир 1\n"
