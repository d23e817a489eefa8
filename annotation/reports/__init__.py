"""The agreement report: one JSON-serialisable dict per project, and a fixed-width text table.

::

    from annotation.reports import agreement_report, agreement_report_from_file, render_table

    report = agreement_report(project=project, bootstrap=1000, seed=0)
    print(render_table(report))
    json.dumps(report, allow_nan=False)  # always works: no NaN, no numpy types

    # A report on a judgement file, without creating a project (nothing is kept):
    report = agreement_report_from_file(path="testset-v1.json", format="pandalm")

The parts, one module each:

``figures``
    pure numpy: the per-unit sufficient statistics, the pooled figures computed from their
    sums, and the bootstrap over items as weighted sums.
``report``
    :func:`agreement_report`: reads a project's votes and rankings, and writes the report's
    sections (counts, pairwise, ranking, annotators, contested); its docstring describes them.
``from_file``
    :func:`agreement_report_from_file`: the same report on a judgement file, through a
    temporary project that is rolled back.
``text``
    :func:`render_table`: the report as plain text.

The names below are what the API, the dashboard, the management command and the
benchmarks use; import them from here.
"""

from annotation.reports.figures import compact_ratings, pooled_statistics
from annotation.reports.from_file import PAIRWISE_FORMATS, agreement_report_from_file
from annotation.reports.report import (
    CONFIDENCE_LEVEL,
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONTESTED_LIMIT,
    DEFAULT_LOW_AGREEMENT_BELOW,
    DEFAULT_MIN_OVERLAP,
    DEFAULT_POSITION_BIAS_P,
    DEFAULT_TOO_FAST_MS,
    FEW_UNITS_BELOW,
    FLAGS,
    NO_JUDGEMENTS,
    REPORT_VERSION,
    agreement_report,
)
from annotation.reports.text import render_table

__all__ = [
    "CONFIDENCE_LEVEL",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_CONTESTED_LIMIT",
    "DEFAULT_LOW_AGREEMENT_BELOW",
    "DEFAULT_MIN_OVERLAP",
    "DEFAULT_POSITION_BIAS_P",
    "DEFAULT_TOO_FAST_MS",
    "FEW_UNITS_BELOW",
    "FLAGS",
    "NO_JUDGEMENTS",
    "PAIRWISE_FORMATS",
    "REPORT_VERSION",
    "agreement_report",
    "agreement_report_from_file",
    "compact_ratings",
    "pooled_statistics",
    "render_table",
]
