"""bench/scale.py's options: a bad value stops it before any fill, with an error naming the option and the value."""

from __future__ import annotations

import pytest

from bench.scale import PARTS, parse_args

PG = ["--pg-url", "postgresql://bench@127.0.0.1/postgres"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--passes", "0"),
        ("--passes", "two"),
        ("--passes", "101"),
        ("--burners", "-1"),
        ("--burners", "65"),
        ("--burners", "1.5"),
        ("--sample-waits", "-0.02"),
        ("--sample-waits", "0.001"),
        ("--sample-waits", "nan"),
        ("--sample-waits", "often"),
        ("--keep-db", 'rg"; DROP DATABASE postgres; --'),
        ("--keep-db", "Rg_Kept"),
        ("--drop-db", "rg-kept"),
    ],
)
def test_a_bad_value_is_refused_naming_the_option_and_the_value(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args([*PG, option, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {value!r} is not" in err


def test_the_retention_options_are_read() -> None:
    busier = ["--unvacuumed", "--burners", "1", "--vacuum-during", "--sample-waits", "0.02"]
    args = parse_args([*PG, "--keep-db", "rg_kept", "--retention-only", "--passes", "3", *busier])
    assert (args.keep_db, args.only, args.parts, args.passes) == ("rg_kept", "postgres", ("inserts", "retention"), 3)
    assert (args.unvacuumed, args.burners, args.vacuum_during, args.sample_waits) == (True, 1, True, 0.02)


def test_without_them_it_measures_everything_once_with_nothing_busier() -> None:
    args = parse_args(PG)
    assert (args.keep_db, args.only, args.parts, args.passes) == (None, None, PARTS, 1)
    assert (args.unvacuumed, args.burners, args.vacuum_during, args.sample_waits) == (False, 0, False, 0.0)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--retention-only", "--parts", "pages"], "--retention-only measures inserts,retention: not with --parts pages"),
        (["--parts", "pages,charts"], "--parts: charts is not one of"),
        (["--keep-db", "rg_kept", "--only", "sqlite"], "--keep-db rg_kept: a kept database is PostgreSQL's"),
    ],
)
def test_options_that_do_not_go_together_are_refused(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([*PG, *argv])
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--keep-db", "--drop-db"])
def test_a_kept_database_needs_a_server(option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REGIONGUARD_TEST_POSTGRES_URL", raising=False)
    with pytest.raises(SystemExit):
        parse_args([option, "rg_kept"])
    assert f"{option} rg_kept: needs --pg-url or REGIONGUARD_TEST_POSTGRES_URL" in capsys.readouterr().err
