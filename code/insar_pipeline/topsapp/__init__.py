"""topsApp itself: steps and phases (`steps`), topsApp.xml (`xml`), the child process (`child`),
the judge of a phase attempt (`checks`), cleaning a finished pair (`clean`, the `clean`
command), and the job and event records of a pair's topsApp run that every scheduler passes
around (`job`).

May import: `inputs`, and the primitives.
"""
