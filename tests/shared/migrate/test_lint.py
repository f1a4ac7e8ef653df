"""The migration linter: Alembic's offline SQL parsed by pglast, one fixture per rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.events import LintFinding
from shared.migrate import RULES, AlembicRunner, RenderedMigration, blocking, lint_migrations
from shared.migrate import parse_allowances as allowances
from sightops.cli import app
from tests.shared.migrate.helpers import PROJECT_HEAD, PROJECT_VERSIONS, install_migrations

LINT_FIXTURES = {
    "l01_index_non_concurrently": "add-index-non-concurrently",
    "l02_not_null_without_default": "add-column-not-null-without-default",
    "l03_drop_column": "drop-column",
    "l04_drop_table": "drop-table",
    "l05_rename_column": "rename",
    "l06_alter_column_type": "alter-column-type",
    "l07_foreign_key_validated": "foreign-key-without-not-valid",
    "l08_no_lock_timeout": "missing-lock-timeout",
    "l09_set_not_null": "set-not-null",
    "l10_alter_receipts": "locks-migrate-receipts",
    "l11_unknown_allow": "invalid-allow",
    "l12_unparseable": "unparseable-sql",
}


@pytest.fixture(scope="module")
def lint_set(tmp_path_factory: pytest.TempPathFactory) -> list[LintFinding]:
    """Findings for the lint fixtures rendered offline on top of the project's head."""
    versions = install_migrations("lint", tmp_path_factory.mktemp("lint") / "versions")
    runner = AlembicRunner(version_locations=[PROJECT_VERSIONS, versions])
    return lint_migrations(runner.render(runner.script(), PROJECT_HEAD))


def sql(text: str, source: str = "", label: str = "0002_x") -> list[LintFinding]:
    return lint_migrations([RenderedMigration("0002", label, source, text)])


def rules(findings: list[LintFinding]) -> list[str]:
    return [f.rule for f in findings]


@pytest.mark.parametrize(("migration", "rule"), sorted(LINT_FIXTURES.items()))
def test_each_rule_is_caught_on_its_fixture_migration(
    lint_set: list[LintFinding], migration: str, rule: str
) -> None:
    found = [f for f in lint_set if f.migration == migration]
    assert rules(found) == [rule]
    assert found[0].severity == RULES[rule].severity
    assert not found[0].allowed and found[0].message


def test_every_rule_has_a_fixture() -> None:
    assert set(LINT_FIXTURES.values()) == set(RULES)


def test_new_tables_are_exempt_and_an_annotated_rule_is_allowed(
    lint_set: list[LintFinding],
) -> None:
    found = [f for f in lint_set if f.migration == "l13_allowed_and_new_tables"]
    assert [(f.rule, f.allowed) for f in found] == [("drop-column", True)]
    assert blocking(found) == []


def test_the_projects_own_migrations_lint_clean_from_base() -> None:
    runner = AlembicRunner()
    assert lint_migrations(runner.render(runner.script(), None)) == []


def test_statement_is_the_single_statement_that_broke_the_rule() -> None:
    [finding] = sql("SET lock_timeout = '5s';\nSELECT 1;\nCREATE INDEX ix ON personas (name);")
    assert finding.statement == "CREATE INDEX ix ON personas (name)"
    assert finding.migration == "0002_x"


def test_statements_after_non_ascii_text_are_cut_out_correctly() -> None:
    [finding] = sql(
        "SET lock_timeout = '5s';\nCOMMENT ON TABLE projects IS 'Ünïcødé';\n"
        "CREATE INDEX ix ON personas (name);"
    )
    assert finding.statement == "CREATE INDEX ix ON personas (name)"


def test_concurrent_index_on_an_existing_table_passes() -> None:
    assert sql("SET lock_timeout = '5s'; CREATE INDEX CONCURRENTLY ix ON personas (name);") == []


def test_a_table_created_by_an_earlier_pending_migration_counts_as_new() -> None:
    first = RenderedMigration(
        "0002", "0002_a", "", "SET lock_timeout = 1000; CREATE TABLE ops.t (a int);"
    )
    second = RenderedMigration(
        "0003",
        "0003_b",
        "",
        "SET lock_timeout = 1000; CREATE INDEX ix ON ops.t (a);"
        " ALTER TABLE ops.t ADD COLUMN b int NOT NULL; ALTER TABLE ops.t DROP COLUMN a;",
    )
    assert lint_migrations([first, second]) == []


def test_schema_qualified_and_unqualified_names_are_different_tables() -> None:
    found = sql("SET lock_timeout = 1000; CREATE TABLE t (a int); CREATE INDEX ix ON ops.t (a);")
    assert rules(found) == ["add-index-non-concurrently"]


def test_table_rename_is_destructive_but_renaming_an_index_is_not() -> None:
    found = sql(
        "SET lock_timeout = 1000; ALTER TABLE projects RENAME TO project;"
        " ALTER INDEX ix RENAME TO ix2;"
    )
    assert [(f.rule, f.severity) for f in found] == [("rename", "destructive")]


def test_a_default_identity_or_nullable_new_column_passes() -> None:
    assert (
        sql(
            "SET lock_timeout = 1000; ALTER TABLE projects ADD COLUMN a int NOT NULL DEFAULT 0,"
            " ADD COLUMN b bigint GENERATED ALWAYS AS IDENTITY, ADD COLUMN c text;"
        )
        == []
    )


def test_foreign_key_not_valid_then_validated_passes() -> None:
    assert (
        sql(
            "SET lock_timeout = 1000; ALTER TABLE personas ADD CONSTRAINT fk FOREIGN KEY"
            " (project_id) REFERENCES projects (id) NOT VALID;"
            " ALTER TABLE personas VALIDATE CONSTRAINT fk;"
        )
        == []
    )


def test_lock_timeout_zero_or_reset_does_not_count() -> None:
    assert rules(sql("SET lock_timeout = 0; ALTER TABLE projects ADD COLUMN a text;")) == [
        "missing-lock-timeout"
    ]
    assert rules(
        sql("SET lock_timeout = '5s'; RESET lock_timeout; ALTER TABLE projects ADD COLUMN a text;")
    ) == ["missing-lock-timeout"]


def test_validating_a_constraint_on_the_receipts_table_is_fine() -> None:
    assert (
        sql("SET lock_timeout = 1000; ALTER TABLE ops.event_receipts VALIDATE CONSTRAINT c;") == []
    )


def test_annotation_needs_a_known_rule_and_a_reason() -> None:
    good = allowances('# sightops: allow=drop-column,rename reason="moved to attributes"\n')
    assert good.rules == {"drop-column", "rename"} and good.problems == ()
    assert allowances("# sightops: allow=drop-column\n").problems
    assert allowances('# sightops: allow=unparseable-sql reason="x"\n').problems
    assert allowances("nothing here\n").rules == frozenset()


def test_an_allowed_unsafe_finding_does_not_block_but_stays_visible() -> None:
    found = sql(
        "SET lock_timeout = 1000; CREATE INDEX ix ON personas (name);",
        source='# sightops: allow=add-index-non-concurrently reason="table has 10 rows"\n',
    )
    assert [(f.rule, f.allowed) for f in found] == [("add-index-non-concurrently", True)]
    assert blocking(found) == []


def test_a_nul_character_in_the_rendered_sql_is_unparseable_not_half_checked() -> None:
    """The parser stops at NUL; what follows it would run unchecked."""
    sql = "SET lock_timeout = '5s';\nCREATE TABLE a (i int);\x00\nDROP TABLE personas;\n"
    [finding] = lint_migrations([RenderedMigration("0002", "0002_nul", "", sql)])
    assert finding.rule == "unparseable-sql" and "NUL" in finding.message
    assert blocking([finding]) == [finding]


def test_cli_lint_exits_zero_on_the_projects_migrations() -> None:
    result = CliRunner().invoke(app, ["migrations", "lint"])
    assert result.exit_code == 0, result.output
    assert "0 blocking" in result.output


def test_cli_lint_exits_nonzero_on_unallowed_findings(tmp_path: Path) -> None:
    versions = install_migrations("blocked", tmp_path / "versions")
    result = CliRunner().invoke(
        app,
        ["migrations", "lint", "--versions", str(PROJECT_VERSIONS), "--versions", str(versions)],
    )
    assert result.exit_code == 1, result.output
    assert "add-index-non-concurrently" in result.output
    assert "migration-blocked-by-lint.md" in result.output


def test_cli_lint_names_a_migration_that_cannot_be_rendered_and_exits_2(tmp_path: Path) -> None:
    versions = install_migrations("python_raises", tmp_path / "versions")
    result = CliRunner().invoke(
        app,
        ["migrations", "lint", "--versions", str(PROJECT_VERSIONS), "--versions", str(versions)],
    )
    assert result.exit_code == 2, result.output
    assert "could not render migration t002_raises_halfway offline" in result.output
    assert "RuntimeError: persona backfill mapping is missing" in result.output
    assert "Traceback" not in result.output


def test_cli_lint_json_lists_findings(tmp_path: Path) -> None:
    import json

    versions = install_migrations("breaking", tmp_path / "versions")
    result = CliRunner().invoke(
        app,
        [
            "migrations",
            "lint",
            "--json",
            "--versions",
            str(PROJECT_VERSIONS),
            "--versions",
            str(versions),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["breaking"] is True
    assert [f["rule"] for f in report["findings"]] == ["drop-column"]
