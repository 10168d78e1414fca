"""The configuration reference is generated from the schemas the commands check, and kept current."""

from pathlib import Path

from gpc.app.docs import documentation

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_is_generated_from_the_schemas():
    assert DOCS.read_text() == documentation(), "stale: run python -m gpc.app.docs > docs/configuration.md"


def test_every_field_is_documented():
    undocumented = [line.split("|")[1].strip() for line in documentation().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undocumented, f"fields without a meaning: {undocumented}"
