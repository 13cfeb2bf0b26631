"""A strict reader of the Prometheus text format 0.0.4, for asserting on /metrics.

Written for the tests rather than taken from ``prometheus_client`` so the suite needs no
extra dependency, and stricter than a scraper on purpose: every rule a scraper would
reject, or silently misread, fails here with the offending line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
#: Sample-name suffixes a family of each type may use.
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}

Labels = tuple[tuple[str, str], ...]


class FormatError(AssertionError):
    """The exposition breaks the text format; the message names the line."""


@dataclass
class Family:
    name: str
    help: str | None = None
    type: str = "untyped"
    #: (sample name, sorted labels) -> value.
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises ``FormatError`` on anything a scraper would not accept."""
    if text and not text.endswith("\n"):
        raise FormatError("the exposition must end with a line feed")
    families: dict[str, Family] = {}
    current: Family | None = None
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        where = f"line {number}: {line!r}"
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.fullmatch(name):
                    raise FormatError(f"invalid metric name in {where}")
                family = families.setdefault(name, Family(name))
                if family.samples:
                    raise FormatError(f"{parts[1]} after the family's samples in {where}")
                text_part = parts[3] if len(parts) == 4 else ""
                if parts[1] == "HELP":
                    if family.help is not None:
                        raise FormatError(f"second HELP in {where}")
                    family.help = _unescape(text_part, quotes=False, where=where)
                else:
                    if text_part not in TYPES:
                        raise FormatError(f"unknown type in {where}")
                    family.type = text_part
                current = family
            continue
        sample_name, labels, value = _sample(line, where)
        family = _family_of(sample_name, current, families, where)
        key = (sample_name, labels)
        if key in family.samples:
            raise FormatError(f"duplicate series in {where}")
        family.samples[key] = value
        current = family
    for family in families.values():
        _check_family(family)
    return families


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    """The value of one series; ``name`` may carry a histogram suffix."""
    wanted = tuple(sorted(labels.items()))
    for family in families.values():
        if (name, wanted) in family.samples:
            return family.samples[(name, wanted)]
    raise KeyError(f"no series {name}{dict(wanted)}")


def _sample(line: str, where: str) -> tuple[str, Labels, float]:
    match = METRIC_NAME.match(line)
    if match is None:
        raise FormatError(f"invalid metric name in {where}")
    name, rest = match.group(), line[match.end() :]
    labels: list[tuple[str, str]] = []
    if rest.startswith("{"):
        rest = rest[1:]
        while not rest.startswith("}"):
            label = LABEL_NAME.match(rest)
            if label is None or rest[label.end() : label.end() + 2] != '="':
                raise FormatError(f"invalid label in {where}")
            rest = rest[label.end() + 2 :]
            raw, rest = _quoted(rest, where)
            labels.append((label.group(), _unescape(raw, quotes=True, where=where)))
            if rest.startswith(","):
                rest = rest[1:]
            elif not rest.startswith("}"):
                raise FormatError(f"expected ',' or '}}' in {where}")
        rest = rest[1:]
    names = [label for label, _ in labels]
    if len(set(names)) != len(names):
        raise FormatError(f"repeated label in {where}")
    fields = rest.split(" ")
    if fields[0] != "" or len(fields) not in (2, 3):
        raise FormatError(f"expected ' value [timestamp]' in {where}")
    return name, tuple(sorted(labels)), _float(fields[1], where)


def _quoted(text: str, where: str) -> tuple[str, str]:
    """The raw text of a label value up to its closing quote, and what follows it."""
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return text[:index], text[index + 1 :]
        if text[index] == "\n":
            break
        index += 1
    raise FormatError(f"unterminated label value in {where}")


def _unescape(text: str, *, quotes: bool, where: str) -> str:
    escapes = {"\\": "\\", "n": "\n", **({'"': '"'} if quotes else {})}
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            follower = text[index + 1 : index + 2]
            if follower not in escapes:
                raise FormatError(f"invalid escape \\{follower} in {where}")
            out.append(escapes[follower])
            index += 2
            continue
        if quotes and char == '"':
            raise FormatError(f"unescaped quote in {where}")
        out.append(char)
        index += 1
    return "".join(out)


def _float(text: str, where: str) -> float:
    special = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"invalid value in {where}") from None


def _family_of(
    sample_name: str, current: Family | None, families: dict[str, Family], where: str
) -> Family:
    """Samples must follow their own family's HELP/TYPE lines, contiguously."""
    if current is not None:
        for suffix in SUFFIXES.get(current.type, ("",)):
            if sample_name == current.name + suffix:
                return current
    if sample_name in families:
        raise FormatError(f"samples of {sample_name} are not contiguous in {where}")
    family = Family(sample_name)
    families[sample_name] = family
    return family


def _check_family(family: Family) -> None:
    """Counters end in _total and never go negative; histograms are cumulative."""
    if family.type == "counter":
        if not family.name.endswith("_total"):
            raise FormatError(f"counter {family.name} should end in _total")
        if any(v < 0 for v in family.samples.values()):
            raise FormatError(f"negative counter {family.name}")
    if family.type == "histogram":
        _check_histogram(family)


def _check_histogram(family: Family) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    counts: dict[Labels, float] = {}
    for (name, labels), sample in family.samples.items():
        rest = tuple(label for label in labels if label[0] != "le")
        if name.endswith("_bucket"):
            le = dict(labels).get("le")
            if le is None:
                raise FormatError(f"{family.name} bucket without le")
            series.setdefault(rest, []).append((_float(le, family.name), sample))
        elif name.endswith("_count"):
            counts[rest] = sample
    for labels, buckets in series.items():
        buckets.sort()
        if buckets[-1][0] != math.inf:
            raise FormatError(f"{family.name}{dict(labels)} lacks the +Inf bucket")
        cumulative = [count for _, count in buckets]
        if cumulative != sorted(cumulative):
            raise FormatError(f"{family.name}{dict(labels)} buckets are not cumulative")
        if counts.get(labels) != buckets[-1][1]:
            raise FormatError(f"{family.name}{dict(labels)} _count differs from +Inf bucket")
