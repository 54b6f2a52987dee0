"""pairs.txt: the grammar table, pair rules, and load_pairs against a real data/raw folder."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import insar_pipeline.inputs.pairs as pairs_module
from conftest import REPO, SLC_REFERENCE, SLC_SECONDARY, make_data_folder, make_safe_product
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import build_pairs, load_pairs, pair_problems
from insar_pipeline.inputs.pairs_text import PairLine, parse_pairs_text, split_pairs_text
from insar_pipeline.inputs.safe import Product

GOOD_LINES = [
    ('("A.SAFE", "B.SAFE")', ("A", "B")),
    ("('A.zip', 'B')", ("A", "B")),
    ('("A.SAFE", "B.SAFE"),', ("A", "B")),
    ("A B", ("A", "B")),
    ("A,B", ("A", "B")),
    ("  A ,  B  # a comment", ("A", "B")),
    ("\"A\" 'B.zip'", ("A", "B")),
    ("[A.safe, B.ZIP]", ("A", "B")),
    ("\tA\tB\t", ("A", "B")),
    (f"{SLC_REFERENCE}.SAFE {SLC_SECONDARY}", (SLC_REFERENCE, SLC_SECONDARY)),
]

NOT_A_NAME = "names must be product names in data/raw (no folders, paths or '..')"
TWO_NAMES = "expected two product names (one pair per line), found"
BAD_LINES = [
    ('("A", "B"', "'(' is never closed; write (\"A.SAFE\", \"B.SAFE\")"),
    ("A", f"{TWO_NAMES} 'A'"),
    ("A B C", f"{TWO_NAMES} 'A', 'B', 'C'"),
    ('("a", "b"), ("c", "d")', f"{TWO_NAMES} 'a', 'b', ')', '(', 'c', 'd'"),
    ('"A B', "unclosed quote \" in '\"A B'"),
    ("/data/raw/A B", f"'/data/raw/A': {NOT_A_NAME}"),
    ("../A B", f"'../A': {NOT_A_NAME}"),
    ("A raw/B.SAFE", f"'raw/B.SAFE': {NOT_A_NAME}"),
    ("A ~B", f"'~B': {NOT_A_NAME}"),
    ("A .hidden", f"'.hidden': {NOT_A_NAME}"),
    (",", f"{TWO_NAMES} none"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "names"), GOOD_LINES)
def test_good_line(line: str, names: tuple[str, str]) -> None:
    assert split_pairs_text(line) == ([PairLine(1, *names)], [])


def test_every_bad_line_is_reported_with_its_number() -> None:
    # Bad lines interleaved with comments, blank lines and good lines: numbers must stay exact.
    lines, expected = ["# pairs", ""], []
    for bad, message in BAD_LINES:
        lines += [bad, "A B", "   # comment"]
        expected.append(f"my_pairs.txt:{len(lines) - 2}: {message}")
    with pytest.raises(InputError) as caught:
        parse_pairs_text("\n".join(lines), "my_pairs.txt")
    assert str(caught.value).splitlines() == expected


def test_repository_example_pairs_file_parses() -> None:
    entries = parse_pairs_text((REPO / "pairs.txt").read_text())
    assert [(e.first, e.second) for e in entries] == [(SLC_REFERENCE, SLC_SECONDARY)]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def scene(day: str, **changes) -> Product:
    """A product built directly (no file): track 108, VV+VH, three swaths."""
    start = utc(f"{day}T02:20:08.5")
    fields = dict(
        path=Path(f"/raw/S1A_{day}.SAFE"), name=f"S1A_{day}", mission="S1A", mode="IW",
        product_type="SLC", polarizations=("vv", "vh"), relative_orbit=108, absolute_orbit=1,
        start=start, stop=start + timedelta(seconds=27), swaths=(1, 2, 3),
        footprint=((52.6, -130.1), (53.0, -126.3), (51.4, -125.9), (51.0, -129.6)),
    )  # fmt: skip
    fields.update(changes)
    return Product(**fields)


@pytest.mark.parametrize(("second", "message"), [
    (scene("2025-04-18", relative_orbit=64),
     "the products are on different tracks (relative orbit 108 and 64)"),
    (scene("2025-04-18", polarizations=("hh", "hv")),
     "POLARIZATION=vv is not in both products (S1A_2025-04-06 has VV+VH,"
     " S1A_2025-04-18 has HH+HV)"),
    (scene("2025-04-06", name="S1A_other", path=Path("/raw/S1A_other.SAFE")),
     "both products were acquired on 2025-04-06; a pair needs two dates"),
    (scene("2025-04-18", mode="EW"),
     "S1A_2025-04-18 is an EW SLC product; only IW SLC products can be paired"),
    (scene("2025-04-18", product_type="GRD"),
     "S1A_2025-04-18 is an IW GRD product; only IW SLC products can be paired"),
    (scene("2025-04-06"), "both names are the same product S1A_2025-04-06"),
])  # fmt: skip
def test_pair_rules(second: Product, message: str) -> None:
    assert pair_problems(scene("2025-04-06"), second, "vv") == [message]


def test_different_missions_on_one_track_pair() -> None:
    s1c = scene("2025-04-12", mission="S1C", name="S1C_2025-04-12")
    assert pair_problems(scene("2025-04-06"), s1c, "vv") == []


def test_build_pairs_swaps_dedups_narrows_swaths_and_disambiguates_ids() -> None:
    a, b = scene("2025-04-06"), scene("2025-04-18", swaths=(1, 2))
    a_slice = scene("2025-04-06", name="S1A_next", path=Path("/raw/S1A_next.SAFE"),
                    start=utc("2025-04-06T02:20:33.1"))  # fmt: skip
    b_twin = scene("2025-04-18", name="S1A_twin", path=Path("/raw/S1A_twin.zip"))
    candidates = [(3, b, a), (5, a, b), (8, a_slice, b), (9, a, b_twin), (10, a_slice, b_twin)]
    pairs, errors, warnings = build_pairs(candidates, (1, 2, 3), "vv")
    assert errors == []
    assert [(p.id, p.reference.name, p.secondary.name, p.swaths, p.line) for p in pairs] == [
        ("20250406_20250418", "S1A_2025-04-06", "S1A_2025-04-18", (1, 2), 3),
        ("20250406_20250418_022033", "S1A_next", "S1A_2025-04-18", (1, 2), 8),
        ("20250406_20250418_022008", "S1A_2025-04-06", "S1A_twin", (1, 2, 3), 9),
        ("20250406_20250418_022033_2", "S1A_next", "S1A_twin", (1, 2, 3), 10),
    ]
    assert [w.render("p") for w in warnings] == [
        "p:3: S1A_2025-04-06 is the earlier date; swapped",
        "p:3: IW3 left out: not in both products",
        "p:5: duplicate of line 3; dropped",
        "p:8: IW3 left out: not in both products",
        "p:8: 3 pair(s) share their dates with an earlier pair (other tracks or frames);"
        " their ids get the reference start time, e.g. 20250406_20250418_022033",
    ]


def test_build_pairs_without_shared_swath_is_an_error() -> None:
    pairs, errors, _ = build_pairs(
        [(4, scene("2025-04-06", swaths=(1,)), scene("2025-04-18", swaths=(2, 3)))], (1, 2, 3), "vv"
    )
    assert pairs == []
    assert [e.render("p") for e in errors] == [
        "p:4: no swath of SWATHS=1,2,3 is in both products (S1A_2025-04-06 has IW1,"
        " S1A_2025-04-18 has IW2,IW3)"
    ]


# --- load_pairs on a real data folder -------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the real pair and variants of it (built once for this module)."""
    data = make_data_folder(tmp_path_factory.mktemp("pairs"))
    raw = data / "raw"
    make_safe_product(raw, SLC_REFERENCE, SLC_REFERENCE)
    make_safe_product(raw, SLC_SECONDARY, SLC_SECONDARY)
    variants = {
        "TRACK64": dict(start=utc("2025-04-30T02:20:08"), relative_orbit=64),
        "HH": dict(start=utc("2025-05-12T02:20:08"), polarizations=("hh",)),
        "SLICE": dict(start=utc("2025-04-06T02:20:33"),
                      footprint=((51.0, -130), (53, -126), (52, -128))),
        "IW12": dict(start=utc("2025-05-24T02:20:08"), swaths=(1, 2)),
        "ZIPPED": dict(start=utc("2025-06-17T02:20:08"), as_zip=True),
    }  # fmt: skip
    for label, options in variants.items():
        path = make_safe_product(raw, **options)
        (data / f"{label}.name").write_text(path.name.split(".")[0])
    (raw / "S1A_IW_SLC__1SDV_20250629T022008_20250629T022035_059330_07AAAA_BAD0.zip").write_bytes(
        b"PK\x03\x04 truncated download"
    )
    return data


def name(data_dir: Path, label: str) -> str:
    return (data_dir / f"{label}.name").read_text()


def settings_for(data_dir: Path, text: str, **changes) -> Settings:
    pairs_file = data_dir.parent / f"pairs-{abs(hash(text))}.txt"
    pairs_file.write_text(text)
    return Settings(
        data_dir=data_dir, pairs_file=pairs_file, env_file=data_dir / "none.env", **changes
    )


def test_loads_the_real_pair_swapping_and_dropping_duplicates(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        f'("{SLC_SECONDARY}.SAFE", "{SLC_REFERENCE}.SAFE")\n'
        f"{SLC_REFERENCE} {SLC_SECONDARY}  # the same pair again\n"
    )
    with caplog.at_level(logging.WARNING):
        pairs = load_pairs(settings := settings_for(data_dir, text))
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair.id, pair.reference.name, pair.secondary.name) == (
        "20250406_20250418",
        SLC_REFERENCE,
        SLC_SECONDARY,
    )
    assert pair.swaths == (1, 2, 3) and pair.line == 1
    assert pair.reference.path == data_dir / "raw" / f"{SLC_REFERENCE}.SAFE"
    assert [r.getMessage() for r in caplog.records] == [
        f"{settings.pairs_file}:1: {SLC_REFERENCE} is the earlier date; swapped",
        f"{settings.pairs_file}:2: duplicate of line 1; dropped",
    ]


def test_every_problem_is_reported_at_once_with_its_line(data_dir: Path) -> None:
    bad_zip = "S1A_IW_SLC__1SDV_20250629T022008_20250629T022035_059330_07AAAA_BAD0"
    missing = SLC_SECONDARY.replace("C7D4", "C7D5")
    lines = [
        "# every line below is wrong",
        f"{SLC_REFERENCE} {name(data_dir, 'TRACK64')}",
        f"{SLC_REFERENCE} {name(data_dir, 'HH')}",
        f"{SLC_REFERENCE} {name(data_dir, 'SLICE')}",
        f"{SLC_REFERENCE} {missing}.SAFE",
        f"{SLC_REFERENCE} {bad_zip}.zip",
        f"{SLC_REFERENCE} ../{SLC_SECONDARY}",
        f"{SLC_REFERENCE}",
    ]
    settings = settings_for(data_dir, "\n".join(lines))
    with pytest.raises(InputError) as caught:
        load_pairs(settings)
    raw, file = data_dir / "raw", settings.pairs_file
    assert str(caught.value).splitlines() == [
        f"{file}:2: the products are on different tracks (relative orbit 108 and 64)",
        f"{file}:3: POLARIZATION=vv is not in both products ({SLC_REFERENCE} has VV,"
        f" {name(data_dir, 'HH')} has HH)",
        f"{file}:4: both products were acquired on 2025-04-06; a pair needs two dates",
        f"{file}:5: {missing} is not in {raw} (no {missing}.SAFE folder or {missing}.zip file);"
        f" did you mean {SLC_SECONDARY}?",
        f"{file}:6: {raw / bad_zip}.zip: not a readable zip (File is not a zip file);"
        " download it again",
        f"{file}:7: '../{SLC_SECONDARY}': names must be product names in data/raw"
        " (no folders, paths or '..')",
        f"{file}:8: expected two product names (one pair per line), found '{SLC_REFERENCE}'",
    ]


def test_swaths_are_narrowed_to_those_in_both_products(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"{SLC_REFERENCE} {name(data_dir, 'IW12')}\n"
    with caplog.at_level(logging.WARNING):
        (pair,) = load_pairs(settings_for(data_dir, text))
    assert pair.swaths == (1, 2) and "IW3 left out: not in both products" in caplog.text
    (pair,) = load_pairs(settings_for(data_dir, text, swaths=(2,)))
    assert pair.swaths == (2,)
    with pytest.raises(InputError, match=r":1: no swath of SWATHS=3 is in both products"):
        load_pairs(settings_for(data_dir, text, swaths=(3,)))


def test_same_date_products_get_distinct_ids_and_zip_resolves(data_dir: Path) -> None:
    text = (
        f"{SLC_REFERENCE} {SLC_SECONDARY}\n"
        f"{name(data_dir, 'SLICE')} {SLC_SECONDARY}\n"
        f"{SLC_REFERENCE} {name(data_dir, 'ZIPPED')}.SAFE\n"
    )
    pairs = load_pairs(settings_for(data_dir, text))
    assert [p.id for p in pairs] == [
        "20250406_20250418",
        "20250406_20250418_022033",
        "20250406_20250617",
    ]
    assert pairs[2].secondary.is_zip


def test_only_selects_pairs_and_rejects_unknown_ids(data_dir: Path) -> None:
    text = f"{SLC_REFERENCE} {SLC_SECONDARY}\n{SLC_REFERENCE} {name(data_dir, 'ZIPPED')}\n"
    pairs = load_pairs(settings_for(data_dir, text, only=("20250406_20250617",)))
    assert [p.id for p in pairs] == ["20250406_20250617"]
    with pytest.raises(InputError, match=r"^--only 20250101_20250113: no such pair id in .*"
                       r"\(ids there: 20250406_20250418, 20250406_20250617\)$"):  # fmt: skip
        load_pairs(settings_for(data_dir, text, only=("20250406_20250617", "20250101_20250113")))


def test_each_product_is_read_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real_read = pairs_module.read_product

    def counting(path: Path) -> Product:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(pairs_module, "read_product", counting)
    text = (
        "".join(
            f"{SLC_REFERENCE} {name(data_dir, label)}\n" for label in ("IW12", "ZIPPED", "IW12")
        )
        + f"{SLC_REFERENCE}.SAFE {SLC_SECONDARY}.SAFE\n"
    )
    assert len(load_pairs(settings_for(data_dir, text))) == 3
    assert sorted(path.name for path in reads) == sorted(
        [f"{SLC_REFERENCE}.SAFE", f"{name(data_dir, 'IW12')}.SAFE",
         f"{name(data_dir, 'ZIPPED')}.zip", f"{SLC_SECONDARY}.SAFE"]
    )  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [
    (None, r"pairs-missing\.txt not found; write one pair per line"),
    ("# only a comment\n\n", r"lists no pair; write one pair per line"),
    (b"\xff\xfe A B", r"not UTF-8 text"),
])  # fmt: skip
def test_unusable_pairs_file(data_dir: Path, text, message: str) -> None:
    settings = settings_for(data_dir, "")
    path = settings.pairs_file.with_name("pairs-missing.txt")
    if isinstance(text, str):
        path.write_text(text)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    with pytest.raises(InputError, match=message):
        load_pairs(settings.with_changes(pairs_file=path))
    path.unlink(missing_ok=True)


def test_missing_raw_folder(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_text("A B\n")
    settings = Settings(data_dir=tmp_path / "nothing", pairs_file=tmp_path / "pairs.txt")
    with pytest.raises(InputError, match=r"nothing/raw does not exist; put the \.SAFE folders"):
        load_pairs(settings)
