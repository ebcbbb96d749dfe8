import json
from html.parser import HTMLParser

import pandas as pd
import pytest
from click.testing import CliRunner
from markupsafe import Markup

from eoaudit.cli import main
from eoaudit.report import highlight

ATTACK = "<script>alert(1)</script>"


class PageParser(HTMLParser):
    """Collects the tags, external references and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.stack.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.references.append(value)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture()
def hostile_out(tmp_path):
    frame = pd.DataFrame(
        {
            "sample_id": [ATTACK, "plain"],
            "caption": [ATTACK, "A field & a <b>river</b>"],
            "lat": [1.0, 2.0],
            "lon": [3.0, 4.0],
        }
    )
    path = tmp_path / "hostile.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    gates = tmp_path / "gates.yaml"
    # A gate that fails on purpose, so that findings and gates are on the page.
    gates.write_text(
        "gates:\n  - metric: dataset.samples\n    comparison: '>'\n    threshold: 10\n",
        encoding="utf-8",
    )
    # An empty caption gives a finding whose examples are the sample ids.
    frame.loc[len(frame)] = ["<img src=x onerror=alert(2)>", " ", 0.0, 0.0]
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(
        main, ["run", "--dataset", str(path), "--gates", str(gates), "--out", str(out), "-q"]
    )
    assert result.exit_code == 1, result.output
    return out


def test_report_escapes_captions_and_ids(hostile_out):
    page = (hostile_out / "report.html").read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "img" in parser.tags  # the figures
    assert "b" not in parser.tags
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<img src=x" not in page


def test_report_is_self_contained(hostile_out):
    page = (hostile_out / "report.html").read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(page)
    assert parser.references, "expected the embedded figures"
    for reference in parser.references:
        assert reference.startswith("data:image/png;base64,"), reference
    assert "<link" not in page
    assert "<style>" in page


def test_report_opens_with_gate_outcome(hostile_out):
    page = (hostile_out / "report.html").read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(page)
    text = " ".join(" ".join(parser.text).split())
    assert text.index("Gates: failed") < text.index("Findings")
    results = json.loads((hostile_out / "results.json").read_text(encoding="utf-8"))
    assert results["passed"] is False


def test_highlight_marks_spans_and_escapes():
    text = "A <river> near 5 cars & trees"
    cars = text.index("cars")
    marked = highlight(text, [[cars, cars + 4, "object"], [2, 9, "water"]])
    assert isinstance(marked, Markup)
    assert str(marked) == (
        'A <mark title="water">&lt;river&gt;</mark> near 5 <mark title="object">cars</mark>'
        " &amp; trees"
    )


def test_highlight_accepts_json_and_skips_overlaps():
    marked = highlight("abcdef", json.dumps([[0, 3, "x"], [2, 5, "y"]]))
    assert str(marked) == '<mark title="x">abc</mark>def'


def test_highlight_escapes_labels():
    marked = highlight("abc", [[0, 1, '"><script>']])
    assert "<script>" not in str(marked)
