"""``ferry datasets`` and ``ferry datasets add`` on a temporary datasets root, through the real parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.cli import build_parser
from shared.datasets import load_dataset
from shared.ops_common import Exit
from shared.settings import FerrySettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "iris.csv"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "datasets"  # not there yet: add creates it


def ferry(root: Path, *argv: str) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(list(argv))
    key = f"{args.command}.{args.action}" if getattr(args, "action", None) else args.command
    return commands[key](args, FerrySettings(datasets_root=root))


def two_class_csv(path: Path, *, shift: int = 0) -> Path:
    rows = [f"{i + shift},{i % 3},{'yes' if i % 2 else 'no'}" for i in range(30)]
    path.write_text("\n".join(["a,b,label", *rows]) + "\n")
    return path


def test_add_copies_the_example_and_prints_the_dataset_name_to_train_with(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ferry(root, "datasets", "add", str(EXAMPLE)) == Exit.OK
    out = capsys.readouterr().out
    assert f"copied: {root / 'iris.csv'} (150 rows, 4 features, 3 classes)" in out
    assert "--dataset csv:iris.csv" in out
    assert (root / "iris.csv").read_bytes() == EXAMPLE.read_bytes()
    assert load_dataset("csv:iris.csv", root=root).class_names == ("setosa", "versicolor", "virginica")
    assert [path.name for path in root.iterdir()] == ["iris.csv"]  # no partial copy left behind


def test_adding_the_same_content_again_changes_nothing(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(root, "datasets", "add", str(EXAMPLE)) == Exit.OK
    assert ferry(root, "datasets", "add", str(EXAMPLE)) == Exit.OK
    assert "already there" in capsys.readouterr().out


def test_a_different_file_of_the_same_name_is_replaced_only_with_force(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = two_class_csv(tmp_path / "iris.csv")
    assert ferry(root, "datasets", "add", str(EXAMPLE)) == Exit.OK
    assert ferry(root, "datasets", "add", str(other)) == Exit.FAILED
    assert "holds a different file; --force replaces it" in capsys.readouterr().err
    assert (root / "iris.csv").read_bytes() == EXAMPLE.read_bytes()
    assert ferry(root, "datasets", "add", str(other), "--force") == Exit.OK
    assert (root / "iris.csv").read_bytes() == other.read_bytes()
    assert sorted(path.name for path in root.iterdir()) == ["iris.csv"]


def test_name_places_the_copy_in_a_folder_of_the_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(root, "datasets", "add", str(EXAMPLE), "--name", "team/flowers.csv") == Exit.OK
    assert "--dataset csv:team/flowers.csv" in capsys.readouterr().out
    assert load_dataset("csv:team/flowers.csv", root=root).num_classes == 3


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("flowers.parquet", "does not end in .csv"),
        ("notes.txt", "does not end in .csv"),
        ("../outside.csv", "is refused"),
        ("/etc/flowers.csv", "is refused"),
        ("team/../../x.csv", "is refused"),
        (".hidden.csv", "is refused"),
    ],
)
def test_names_that_are_not_a_csv_inside_the_root_are_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fragment: str
) -> None:
    assert ferry(root, "datasets", "add", str(EXAMPLE), "--name", name) == Exit.USAGE
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "outside.csv").exists() and not (root.exists() and any(root.iterdir()))


def test_a_file_the_trainer_would_refuse_is_not_copied_and_not_quoted(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,label\n" + "".join(f"confidential{i},a\n" for i in range(30)))
    assert ferry(root, "datasets", "add", str(bad)) == Exit.USAGE
    err = capsys.readouterr().err
    assert "csv:bad.csv would be refused by the trainer: column 1 is not numeric on line 2" in err
    assert "confidential" not in err
    assert not (root / "bad.csv").exists() and list(root.iterdir()) == []
    assert ferry(root, "datasets", "add", str(EXAMPLE), "--label-column", "species") == Exit.USAGE
    assert "has no label column 'species'" in capsys.readouterr().err


def test_a_missing_file_is_not_found(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(root, "datasets", "add", str(tmp_path / "nope.csv")) == Exit.NOT_FOUND
    assert "no file" in capsys.readouterr().err


def test_the_listing_shows_size_rows_and_columns(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ferry(root, "datasets") == Exit.OK
    assert f"no datasets in {root}; ferry datasets add FILE" in capsys.readouterr().out
    ferry(root, "datasets", "add", str(EXAMPLE))
    ferry(root, "datasets", "add", str(two_class_csv(tmp_path / "small.csv")), "--name", "more/small.csv")
    (root / "README.txt").write_text("notes\n")
    (root / ".partial.csv").write_text("hidden\n")
    outside = two_class_csv(tmp_path / "outside.csv")
    (root / "link.csv").symlink_to(outside)  # leads out of the root: never read, so not listed
    capsys.readouterr()
    assert ferry(root, "datasets", "--json") == Exit.OK
    listed = json.loads(capsys.readouterr().out)
    small = (root / "more" / "small.csv").stat().st_size
    assert listed == [
        {"file": "README.txt", "dataset": None, "size_bytes": 6, "rows": None, "columns": None},
        {
            "file": "iris.csv",
            "dataset": "csv:iris.csv",
            "size_bytes": EXAMPLE.stat().st_size,
            "rows": 150,
            "columns": 5,
        },
        {"file": "more/small.csv", "dataset": "csv:more/small.csv", "size_bytes": small, "rows": 30, "columns": 3},
    ]
    assert ferry(root, "datasets") == Exit.OK
    table = capsys.readouterr().out
    assert "csv:iris.csv" in table and "150" in table and "link.csv" not in table
