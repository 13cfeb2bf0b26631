"""The env templates (.env.development, .env.production) document every setting
src/evothesis/config.py reads and nothing it does not know, unless docker-compose.yml or
the nginx template uses it; so neither side can drift from the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evothesis.config import DEPLOYMENT_VARIABLES, check_environment, setting_names
from tests.support.nginx import ROOT, placeholders

TEMPLATES = (".env.development", ".env.production")
#: ``NAME=value``, or ``# NAME=value`` for a setting left at its default.
VARIABLE = re.compile(r"^(?:# ?)?([A-Z][A-Z0-9_]*)=")


def variables(path: Path) -> list[str]:
    return [m.group(1) for line in path.read_text().splitlines() if (m := VARIABLE.match(line))]


def settings_names() -> set[str]:
    """Every name Evothesis reads, the seed's other names of a setting included."""
    return set(setting_names())


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_setting_is_in_the_template(template: str) -> None:
    missing = settings_names() - set(variables(ROOT / template))
    assert not missing, f"{template} does not document {sorted(missing)}"


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_other_variable_is_used_by_compose_or_nginx(template: str) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    unknown = {
        name
        for name in set(variables(ROOT / template)) - settings_names() - placeholders()
        if "${" + name not in compose and f"\n    {name}:\n" not in compose
    }
    assert not unknown, f"{template}: nothing reads {sorted(unknown)}"


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_variable_has_its_meaning_above_it(template: str) -> None:
    """Each group of variable lines follows a comment that explains it."""
    explained = False
    for number, line in enumerate((ROOT / template).read_text().splitlines(), 1):
        if not line.strip():
            explained = False
        elif VARIABLE.match(line):
            assert explained, f"{template}:{number}: {line!r} has no explanation above it"
        elif line.startswith("#") and not line.startswith("# ===="):
            explained = True


def test_both_templates_list_the_same_variables_in_the_same_order() -> None:
    development, production = (variables(ROOT / template) for template in TEMPLATES)
    assert development == production
    assert len(development) == len(set(development)), "a variable is listed twice"


@pytest.mark.parametrize("template", TEMPLATES)
def test_variables_for_compose_with_a_settings_prefix_are_known_as_such(template: str) -> None:
    """Evothesis warns about variables that start like a setting but are none; the
    templates' own compose variables must not be among them."""
    names = set(variables(ROOT / template))
    unread = check_environment(dict.fromkeys(names, "x")).unread
    assert not unread, f"{template}: {unread} would be warned about"
    assert names >= DEPLOYMENT_VARIABLES
