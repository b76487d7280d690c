"""The README's Python examples must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_cpu_only_installation_matches_the_pinned_versions():
    text = README.read_text()
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in text
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", (README.parent / "constraints.txt").read_text(), re.M))
    make_cpu = re.search(r"pip install torch==(\S+) torchvision==(\S+) --index-url https://download.pytorch.org/whl/cpu",
                         text)
    assert make_cpu and make_cpu.groups() == (pins["torch"], pins["torchvision"])


def test_readme_epoch_times_follow_from_their_rates():
    """The training-time table: a row per hardware, a column per preset, each time = images / rate."""
    text = README.read_text()
    images = {"cifar10": 50_000, "imagenet-b": 1_281_167}
    assert f"`cifar10`: {images['cifar10']:,}" in text and f"`imagenet-b`: {images['imagenet-b']:,}" in text
    header = re.search(r"^\| hardware \| `cifar10` \| `imagenet-b` \|$", text, re.M)
    assert header, "no training-time table"
    rows = re.findall(r"^\| ((?:CPU|one \w+)[^|]*) \| ([^|]+) \| ([^|]+) \|$", text[header.end():], re.M)
    assert {r[0].split(",")[0] for r in rows} >= {"CPU", "one H100", "one H200"}
    unit = {"s": 1, "min": 60, "days": 86400}
    for row in rows:
        for preset, cell in zip(images, row[1:]):
            time = re.match(r"~?([\d.]+)(?:-([\d.]+))? (s|min|days): ([\d.,]+)(?:-([\d.,]+))? img/s", cell.strip())
            assert time, cell
            t_lo, t_hi, u, r_lo, r_hi = time.groups()
            for t, r in ((t_lo, r_hi or r_lo), (t_hi or t_lo, r_lo)):  # the fast end, then the slow end
                seconds = images[preset] / float(r.replace(",", ""))
                assert abs(float(t) * unit[u] - seconds) <= 0.1 * seconds, (row[0], preset, cell)


def test_readme_says_how_images_are_decoded():
    text = " ".join(README.read_text().split())
    assert "composited onto white" in text and "alpha channel is not a model input" in text
