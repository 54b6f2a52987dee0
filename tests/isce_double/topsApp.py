#!/usr/bin/env python3
"""A test double of ISCE2's topsApp.py (ISCE2 2.6.5, as ../shared/ISCE2_CONTRACT.md describes it).

Same step names and order, same command line (`--start=/--end=/--dostep=/--steps/--next`,
`--help`), same checkpoints (`PICKLE/<step>.xml` then `PICKLE/<step>` after each step), same
exit statuses, including the silent ones (a bad step name or a swath that cannot be extracted
exits 0), and a product tree with the sizes of a real run, scaled down. Faults are injected with
environment variables; see README.md beside this file. Needs Python 3.10+ and numpy only.
"""

from __future__ import annotations

import getopt
import os
import pickle
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))

from double_config import ConfigError, fail, isce_value, load  # noqa: E402
from double_deformation import baseline_xml  # noqa: E402
from double_faults import Faults, ignore_sigterm_if_asked  # noqa: E402
from double_steps import STEP_FUNCTIONS, Context, State  # noqa: E402

STEPS = list(STEP_FUNCTIONS)
STEP_OPTIONS = ("--steps", "--dostep", "--start", "--end", "--next")

USAGE = """\
None
The currently supported sensors are:  ['SENTINEL1']
Usage: topsApp.py <input-file.xml>
Usage: topsApp.py --steps
Usage: topsApp.py --help
Usage: topsApp.py --help --steps
"""


def step_help() -> str:
    rows = "\n".join(str(STEPS[i : i + 5]) for i in range(0, len(STEPS), 5))
    return (
        USAGE + "A description of the individual steps can be found in the README file\n"
        "Command line options for steps processing are formed by\n"
        "combining the following three options as required:\n"
        "'--start=<step>', '--end=<step>', '--dostep=<step>'\n"
        f"The step names are chosen from the following list:\n{rows}\n"
        "If --start is missing, then processing starts at the first step.\n"
        "If --end is missing, then processing ends at the final step.\n"
        "If --dostep is used, then only the named step is processed.\n"
        "In order to use either --start or --dostep, it is necessary that a\n"
        "previous run was done using one of the steps options to process at least\n"
        "through the step immediately preceding the starting step of the current run.\n"
    )


def main(argv: list[str]) -> int:
    options = [arg for arg in argv if arg.startswith("--")]
    files = [arg for arg in argv if not arg.startswith("--")]
    if "--help" in options:
        if "--steps" in options:
            print(step_help())
            return 0
        print(USAGE + "Parameters and facilities: see ISCE2_CONTRACT.md section 3")
        return 1  # iscehelp.py: sys.exit(1)
    try:
        config = load(Path(files[0] if files else "topsApp.xml"))
    except ConfigError as err:
        fail(str(err))
    ignore_sigterm_if_asked(os.environ)
    cwd = Path.cwd()
    context = Context(
        config=config,
        cwd=cwd,
        state=State(),
        faults=Faults(os.environ, cwd),
        scale=float(os.environ.get("ISCE_DOUBLE_SCALE", "0.02")),
        bursts=int(os.environ.get("ISCE_DOUBLE_BURSTS", "2")),
    )
    pickle_dir = Path(str(config.get("pickle dump directory") or "PICKLE"))
    # Not an ISCE message: lets tests see the threads the runner gave us.
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if any(option.split("=")[0] in STEP_OPTIONS for option in options):
        print("Step processing")
        process_steps(context, options, pickle_dir)  # topsApp ignores what run() returns
        return 0
    for step in STEPS:  # main(): every step in one go, no checkpoints
        run_step(context, step)
    return 0


def process_steps(context: Context, options: list[str], pickle_dir: Path) -> int:
    """Application._processSteps: the return value is ignored by topsApp (exit 0 regardless)."""
    start_name, end_name = STEPS[0], STEPS[-1]
    opts, _ = getopt.getopt(options, "s:e:d:", ["start=", "end=", "dostep=", "steps", "next"])
    for option, value in opts:
        if option == "--start":
            start_name = value
        elif option == "--end":
            end_name = value
        elif option == "--dostep":
            start_name = end_name = value
        elif option == "--next":
            done = [s for s in STEPS if (pickle_dir / s).exists()]
            if done and STEPS.index(done[-1]) + 1 >= len(STEPS):
                print("Steps has finished the final step. No next step to process.")
                return 0
            start_name = end_name = STEPS[STEPS.index(done[-1]) + 1] if done else STEPS[0]
    for label, name in (("start", start_name), ("end", end_name)):
        if name not in STEPS:
            print(f"ERROR: {label}={name} is not one of the named steps")
            return 1
    start, end = STEPS.index(start_name), STEPS.index(end_name)
    if start > end:
        print(
            f"ERROR: start={start_name}, step number {start} comes after end={end_name}, "
            f"step number {end}"
        )
        return 1
    if start > 0:
        load_checkpoint(context, pickle_dir, STEPS[start - 1])
    for index in range(start, end + 1):
        step = STEPS[index]
        run_step(context, step, pickle_dir)
        remaining = STEPS[index + 1 :]
        print(
            f"The remaining steps are (in order):  {remaining}"
            if remaining
            else "The is the final step"
        )
    return 0


def load_checkpoint(context: Context, pickle_dir: Path, name: str) -> None:
    """Application.loadPickleObj: on a missing file, say so and go on with empty state."""
    path = pickle_dir / f"{name}.xml"
    try:
        text = path.read_text()
        with (pickle_dir / name).open("rb"):
            pass
    except OSError:
        print(f"Cannot open {pickle_dir / name}")
        return
    for prop in ET.fromstring(text).iter("property"):
        context.state[prop.get("name")] = isce_value(prop.findtext("value"))


def run_step(context: Context, step: str, pickle_dir: Path | None = None) -> None:
    print(f"Running step {step}", flush=True)
    context.step = step
    started = time.time()
    try:
        context.faults.before_step(step)
        STEP_FUNCTIONS[step](context)
        context.faults.wrote_file(step)  # a kill fault on a step that wrote nothing
    except BaseException:
        context.faults.log(step, started, time.time(), "failed")
        raise
    render_proc_doc(context, step)
    if pickle_dir is not None:
        dump_checkpoint(context, pickle_dir, step)
    with (context.cwd / "isce.log").open("a") as isce_log:
        isce_log.write(f"topsApp step {step} done\n")
    (context.cwd / "topsinsar.log").touch()
    context.faults.log(step, started, time.time(), "ok")


def dump_checkpoint(context: Context, pickle_dir: Path, step: str) -> None:
    """Application.dumpPickleObj with renderer xml: `<step>.xml` first, then `<step>`."""
    folder = context.cwd / pickle_dir
    folder.mkdir(exist_ok=True)
    lines = (
        ["<topsProc>"]
        + [
            f'  <property name="{key}">\n    <value>{escape(repr(value))}</value>\n  </property>'
            for key, value in sorted(context.state.items())
        ]
        + ["</topsProc>"]
    )
    (folder / f"{step}.xml").write_text("\n".join(lines) + "\n")
    print(f"Dumping the application's pickle object _insar to file  {pickle_dir / step}")
    (folder / step).write_bytes(pickle.dumps(dict(sorted(context.state.items())), protocol=4))


def render_proc_doc(context: Context, step: str) -> None:
    """topsProc.xml: the last step run and, once computeBaselines ran, the common bursts."""
    counts = context.state["numberofcommonbursts"] or []
    baseline = "".join(
        f"    <IW-{n}_Number_of_common_bursts>{count}</IW-{n}_Number_of_common_bursts>\n"
        for n, count in enumerate(counts, 1)
    ) + baseline_xml(context.state["referencesafe"], context.state["secondarysafe"], counts)
    (context.cwd / "topsProc.xml").write_text(
        f"<topsProc>\n  <ISCE_VERSION>double of Release: 2.6.5</ISCE_VERSION>\n"
        f"  <last_step>{step}</last_step>\n  <baseline>\n{baseline}  </baseline>\n</topsProc>\n"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
