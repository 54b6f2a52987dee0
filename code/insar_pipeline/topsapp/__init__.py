"""topsApp itself: steps and phases (`steps`), topsApp.xml (`xml`), the child process (`child`),
the judge of a phase attempt (`checks`) and cleaning a finished pair (`clean`, the `clean`
command).

May import: `inputs`, and the primitives.
"""
