"""topsapp / topsapp_xml: steps, phase plans, resume points, and topsApp.xml generation."""

from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path

import pytest
from lxml import etree

from conftest import real_path
from insar_pipeline.errors import InputError
from insar_pipeline.topsapp.steps import (
    FINAL_STEP,
    STEPS,
    Phase,
    checkpoint_paths,
    discard_checkpoints,
    finished_steps,
    phase_table,
    remaining_phases,
    validate_phase_table,
)
from insar_pipeline.topsapp.xml import (
    GEOCODE_LIST,
    ION_GEOCODE,
    PROPERTY_RULES,
    normalize,
    read_properties,
    run_facts,
    setting_changes,
    topsapp_xml,
    write_topsapp_xml,
)
from isce_double.double_config import load as double_load
from pair_factory import make_pair_setup

# ISCE2_CONTRACT.md section 1, typed out independently of the module under test.
CONTRACT_STEPS = (
    "startup preprocess computeBaselines verifyDEM topo subsetoverlaps coarseoffsets coarseresamp "
    "overlapifg prepesd esd rangecoreg fineoffsets fineresamp ion burstifg mergebursts filter "
    "unwrap unwrap2stage geocode denseoffsets filteroffsets geocodeoffsets"
).split()
PIPELINE_STEPS = CONTRACT_STEPS[: CONTRACT_STEPS.index("geocode") + 1]


def touch_checkpoints(run_dir: Path, steps) -> None:
    for step in steps:
        for path in checkpoint_paths(run_dir, step):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")


# -- steps and phases ------------------------------------------------------------------------
def test_steps_are_isce2s_24_names_in_order():
    assert list(STEPS) == CONTRACT_STEPS
    assert FINAL_STEP == "geocode"


@pytest.mark.parametrize("ionosphere", [False, True])
def test_default_phase_table_covers_every_step_once(ionosphere):
    phases = phase_table(ionosphere)
    validate_phase_table(phases)
    covered = [step for phase in phases for step in phase.steps()]
    assert covered == PIPELINE_STEPS
    names = [phase.name for phase in phases]
    expected = ["preprocess", "geometry", "coregistration", "interferogram", "unwrap", "geocode"]
    if ionosphere:
        expected.insert(3, "ionosphere")
    assert names == expected


def test_phase_table_puts_a_switched_off_ion_step_at_the_head_of_interferogram():
    table = {phase.name: phase for phase in phase_table(False)}
    assert table["interferogram"] == Phase("interferogram", "ion", "filter")
    assert table["unwrap"].steps() == ("unwrap", "unwrap2stage")
    on = {phase.name: phase for phase in phase_table(True)}
    assert on["ionosphere"].steps() == ("ion",)
    assert on["interferogram"].first == "burstifg"
    assert on["preprocess"].steps() == ("startup", "preprocess", "computeBaselines", "verifyDEM")


BAD_TABLES = {
    "gap": (
        [("a", "startup", "verifyDEM"), ("b", "subsetoverlaps", "geocode")],
        "must start at topo",
    ),
    "overlap": (
        [("a", "startup", "topo"), ("b", "topo", "geocode")],
        "must start at subsetoverlaps",
    ),
    "late start": ([("a", "preprocess", "geocode")], "must start at startup"),
    "unknown step": (
        [("a", "startup", "Topo"), ("b", "subsetoverlaps", "geocode")],
        "'Topo' is not",
    ),
    "reversed": ([("a", "topo", "startup")], "comes after"),
    "too short": ([("a", "startup", "filter")], "must reach geocode"),
    "duplicate": ([("a", "startup", "topo"), ("a", "subsetoverlaps", "geocode")], "more than once"),
    "bad name": ([("a b", "startup", "geocode")], "letters, digits"),
    "empty": ([], "empty"),
    "after the end": ([("a", "startup", "geocodeoffsets"), ("b", "geocode", "geocode")], "nothing"),
}


@pytest.mark.parametrize("case", BAD_TABLES, ids=list(BAD_TABLES))
def test_validate_phase_table_rejects_what_topsapp_cannot_resume(case):
    rows, message = BAD_TABLES[case]
    with pytest.raises(InputError, match=message):
        validate_phase_table([Phase(*row) for row in rows])


def test_validate_phase_table_accepts_custom_contiguous_tables():
    validate_phase_table([Phase("all", "startup", "geocode")])
    validate_phase_table(
        [Phase("front", "startup", "fineresamp"), Phase("back", "ion", "geocodeoffsets")]
    )


# -- resume points ---------------------------------------------------------------------------
@pytest.mark.parametrize("ionosphere", [False, True])
@pytest.mark.parametrize("done", range(len(PIPELINE_STEPS) + 1))
def test_resume_point_after_an_interruption_at_every_step(tmp_path, done, ionosphere):
    touch_checkpoints(tmp_path, PIPELINE_STEPS[:done])
    phases = phase_table(ionosphere)
    assert finished_steps(tmp_path) == tuple(PIPELINE_STEPS[:done])
    remaining = remaining_phases(tmp_path, phases)
    # What is left is exactly the unfinished steps, in order, and nothing finished is redone.
    assert [step for phase in remaining for step in phase.steps()] == PIPELINE_STEPS[done:]
    if remaining:
        assert remaining[0].first == PIPELINE_STEPS[done]
        whole = {phase.name: phase for phase in phases}
        assert remaining[0].last == whole[remaining[0].name].last
        assert list(remaining[1:]) == [whole[phase.name] for phase in remaining[1:]]


def test_a_step_needs_both_checkpoint_files_and_every_step_before_it(tmp_path):
    touch_checkpoints(tmp_path, ["startup", "preprocess"])
    (tmp_path / "PICKLE" / "computeBaselines.xml").write_text("x")  # killed before the bare file
    touch_checkpoints(tmp_path, ["verifyDEM", "topo"])  # after a gap: made from empty state
    assert finished_steps(tmp_path) == ("startup", "preprocess")
    first = remaining_phases(tmp_path, phase_table(False))[0]
    assert first == Phase("preprocess", "computeBaselines", "verifyDEM")


def test_discard_checkpoints_sends_the_resume_point_back(tmp_path):
    touch_checkpoints(tmp_path, PIPELINE_STEPS[:4])
    discard_checkpoints(tmp_path, ["startup", "preprocess", "computeBaselines", "verifyDEM"])
    assert finished_steps(tmp_path) == ()
    assert not any((tmp_path / "PICKLE").iterdir())


def test_no_run_folder_means_everything_remains(tmp_path):
    phases = phase_table(False)
    assert remaining_phases(tmp_path / "absent", phases) == phases


# -- topsApp.xml -----------------------------------------------------------------------------
@pytest.fixture
def setup(tmp_path):
    return make_pair_setup(tmp_path)


def isce_eval(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def written(setup, **changes) -> tuple[Path, etree._Element]:
    setup = setup.with_settings(**changes) if changes else setup
    pair = setup.pairs[0]
    run_dir = setup.settings.run_dir(pair.id)
    path = write_topsapp_xml(run_dir, setup.settings, pair, setup.orbit_files, setup.dem)
    return path, etree.parse(str(path)).getroot()


def test_topsapp_xml_parses_back_to_the_settings_and_the_pair(setup):
    path, root = written(setup)
    run_dir = path.parent
    pair = setup.pairs[0]
    assert root.tag == "topsApp"
    (insar,) = root.findall("component")
    assert insar.get("name") == "topsinsar"
    top = {p.get("name"): isce_eval(p.text) for p in insar.findall("property")}
    for role, product in (("reference", pair.reference), ("secondary", pair.secondary)):
        (component,) = insar.findall(f"component[@name='{role}']")
        props = {p.get("name"): isce_eval(p.text) for p in component.findall("property")}
        (safe,) = props["safe"]
        assert (run_dir / safe).resolve() == product.path.resolve()
        assert props["output directory"] == role
        assert props["polarization"] == "vv"
        orbit_dir = run_dir / props["orbit directory"]
        assert sorted(p.name for p in orbit_dir.iterdir()) == sorted(
            setup.orbit_files[p.name].name for p in pair.products
        )
    assert (run_dir / top["demFilename"]).resolve() == setup.dem.resolve()
    assert (run_dir / top["geocode demfilename"]).resolve() == setup.dem.resolve()
    roi = setup.settings.region_of_interest.snwe()
    assert top["swaths"] == [1, 2, 3]
    assert top["region of interest"] == roi
    assert top["geocode bounding box"] == roi
    assert (top["range looks"], top["azimuth looks"], top["filter strength"]) == (19, 7, 0.5)
    assert top["do unwrap"] is True and top["unwrapper name"] == "snaphu_mcf"
    assert top["do ionosphere correction"] is False and top["apply ionosphere correction"] is False
    assert top["use virtual files"] is True
    assert top["geocode list"] == list(GEOCODE_LIST)


def test_topsapp_xml_follows_every_setting(setup):
    _, root = written(
        setup,
        range_looks=10,
        azimuth_looks=2,
        filter_strength=0.3,
        unwrap=False,
        unwrapper="icu",
        ionosphere=True,
        polarization="vh",
        swaths=(2, 3),
        geocode_bbox="51.6,52.4,-129,-127.5",
    )
    props = {k: isce_eval(v) for k, v in read_properties(etree.tostring(root)).items()}
    assert (props["rangelooks"], props["azimuthlooks"], props["filterstrength"]) == (10, 2, 0.3)
    assert props["dounwrap"] is False and props["unwrappername"] == "icu"
    assert props["doionospherecorrection"] is True and props["applyionospherecorrection"] is True
    assert props["geocodelist"][-1] == ION_GEOCODE == "merged/topophase.ion"
    assert props["reference.polarization"] == props["secondary.polarization"] == "vh"
    assert props["geocodeboundingbox"] == [51.6, 52.4, -129.0, -127.5]
    # swaths are the pair's (settings.swaths present in both products), not the settings'
    assert props["swaths"] == [1, 2, 3]


def test_without_a_region_of_interest_topsapp_picks_its_own_boxes(setup):
    _, root = written(setup, region_of_interest=None)
    names = {normalize(p.get("name")) for p in root.iter("property")}
    assert "regionofinterest" not in names and "geocodeboundingbox" not in names


def test_booleans_are_written_the_way_isce_reads_them(setup):
    path, _ = written(setup, unwrap=False)
    facts = run_facts(read_properties(path.read_bytes()))
    assert facts.do_unwrap is False and facts.do_ionosphere is False
    assert facts.swaths == (1, 2, 3)
    assert (facts.reference_dir, facts.secondary_dir) == ("reference", "secondary")
    for element in etree.parse(str(path)).iter("property"):
        assert element.text not in ("true", "false", "TRUE", "FALSE")  # 'false' is True in ISCE


def test_regenerated_xml_has_the_same_bytes_and_is_not_rewritten(setup):
    path, _ = written(setup)
    before = path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino
    os.utime(path, ns=(1, 1))
    written(setup)
    assert path.read_bytes() == before[0]
    assert path.stat().st_mtime_ns == 1  # not rewritten at all
    assert path.stat().st_ino == before[2]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_orbit_folder_holds_hard_links_to_only_the_two_chosen_files(setup):
    path, _ = written(setup)
    orbit_dir = path.parent / "orbits"
    stray = orbit_dir / "S1A_OPER_AUX_RESORB_OPOD_stray.EOF"
    stray.write_text("x")
    written(setup)
    pair = setup.pairs[0]
    assert not stray.exists()
    for product in pair.products:
        source = setup.orbit_files[product.name]
        assert (orbit_dir / source.name).stat().st_ino == source.stat().st_ino


@pytest.mark.parametrize("folder", ["my data", "it's", "a,b"])
def test_paths_topsapp_cannot_read_are_refused(setup, folder):
    pair = setup.pairs[0]
    moved = dataclasses.replace(pair.reference, path=setup.data_dir / "raw" / folder / "x.SAFE")
    pair = dataclasses.replace(pair, reference=moved)
    with pytest.raises(InputError, match="spaces, quotes or commas"):
        topsapp_xml(setup.settings, pair, setup.settings.run_dir(pair.id), setup.dem)


def test_xml_matches_the_structure_of_real_topsapp_files(setup):
    ours = read_properties(written(setup)[0].read_bytes())
    for name in ("hyp3-isce2_slc_pair", "hyp3-isce2_single_burst_pair"):
        real_file = real_path("isce2", name, "topsApp.xml")
        real = read_properties(real_file.read_bytes())
        root = etree.parse(str(real_file)).getroot()
        assert [c.get("name") for c in root.findall("component")] == ["topsinsar"]
        real_components = [c.get("name") for c in root.find("component").findall("component")]
        assert real_components == ["reference", "secondary"]
        for role in ("reference", "secondary"):
            real_keys = {k for k in real if k.startswith(role + ".")}
            our_keys = {k for k in ours if k.startswith(role + ".")}
            # The same per-date properties, except the aux-cal folder we do not provide.
            assert real_keys - our_keys == {f"{role}.auxiliarydatadirectory"}
            assert our_keys <= real_keys
        shared = {k for k in real if "." not in k} & set(ours)
        assert {
            "swaths",
            "rangelooks",
            "azimuthlooks",
            "demfilename",
            "dounwrap",
            "unwrappername",
            "geocodelist",
            "usevirtualfiles",
        } <= shared
        assert all(isinstance(isce_eval(real[k]), type(isce_eval(ours[k]))) for k in shared)
        double_load(real_file)  # the double accepts real files too: it knows their properties


def test_the_double_accepts_the_generated_xml(setup):
    path, _ = written(setup)
    config = double_load(path)
    assert config.swaths == [1, 2, 3]
    assert config.flag("do unwrap", False) is True


def test_setting_changes_name_the_step_that_reads_them(setup):
    old = read_properties(written(setup)[0].read_bytes())
    new = read_properties(written(setup, range_looks=10, swaths=(1, 2))[0].read_bytes())
    changes = {change.key: change for change in setting_changes(old, new)}
    assert set(changes) == {"rangelooks"}  # the pair's swaths did not change: all in both
    assert changes["rangelooks"].step == "burstifg"
    assert "RANGE_LOOKS" in changes["rangelooks"].describe()
    assert all(step in STEPS for step, _ in PROPERTY_RULES.values())
    unknown = setting_changes({"reference.safe": "a"}, {"reference.safe": "b"})
    assert unknown[0].step == "preprocess"
