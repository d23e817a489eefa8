"""The agreement report as a fixed-width plain-text table (``manage.py agreement_report``).

:func:`render_table` reads only the report's JSON, so it renders a project's report and a
file's (:mod:`annotation.reports.from_file`) alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _ci(stat: dict[str, Any]) -> str:
    ci = stat.get("ci")
    if ci is None:
        return "-"
    return f"[{_fmt(ci['low'])}, {_fmt(ci['high'])}]"


def _table(header: list[str], rows: Iterable[list[str]], *, right: Iterable[int] = ()) -> list[str]:
    rows = [header, *rows]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    right = set(right)
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
        if number == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def render_table(report: dict[str, Any], *, max_pairs: int = 30) -> str:
    """A fixed-width plain-text rendering of :func:`agreement_report`'s result."""
    project, counts, parameters = report["project"], report["counts"], report["parameters"]
    source = report.get("source")
    title = f"Agreement report: {project['name']}"
    if source is not None:
        title += f" (file, format {source['format']}, not saved)"
    else:
        title += f" (project {project['id']})"
    lines = [title, "=" * len(title)]
    lines.append(
        f"kind {project['kind']}; items {counts['items']} ({counts['items_with_overlap']} with 2+ judgements) "
        f"of {counts['tasks']} tasks; judgements {counts['judgements']}; annotators {counts['annotators']}; "
        f"pair votes {counts['pair_votes']} on {counts['units']} response pairs"
    )
    verdicts = report.get("verdicts")
    if verdicts and (verdicts["allow_both_bad"] or verdicts["both_bad"]["judgements"]):
        share = verdicts["both_bad"]["share"]
        lines.append(
            f"both are bad: {verdicts['both_bad']['judgements']} of {counts['judgements']} judgements"
            + ("" if share is None else f" ({share * 100:.1f}%)")
            + "; each is a full tie, counted as a tie in the pair figures"
        )
    if source is not None and (source["imported"]["skipped"] or source["notes"]):
        lines.append(f"import: {source['imported']['skipped']} record(s) skipped; " + "; ".join(source["notes"]))
    if parameters["bootstrap"]:
        lines.append(
            f"intervals: {int(parameters['confidence_level'] * 100)}% percentile bootstrap over items, "
            f"{parameters['bootstrap']} resamples, seed {parameters['seed']}"
        )
    else:
        lines.append("intervals: none (bootstrap=0)")

    pairwise = report["pairwise"]
    lines += ["", "Pairwise outcomes (A / tie / B per response pair)"]
    rows = []
    notes = []
    for label, stat, n in (
        ("percent agreement, ties count", pairwise["percent_agreement"], "pairs"),
        ("percent agreement, without ties", pairwise["percent_agreement_no_ties"], "pairs"),
        ("Fleiss' kappa", pairwise["fleiss_kappa"], "n_units"),
        ("Krippendorff's alpha, nominal", pairwise["krippendorff_alpha"]["nominal"], "n_units"),
        ("Krippendorff's alpha, ordinal", pairwise["krippendorff_alpha"]["ordinal"], "n_units"),
    ):
        unit = "pairs of votes" if n == "pairs" else "units"
        rows.append([label, _fmt(stat["value"]), _ci(stat), f"{stat[n]} {unit}"])
        if stat["reason"]:
            notes.append(f"  {label}: {stat['reason']}")
        if stat.get("caution"):
            notes.append(f"  {label}: {stat['caution']}, read it with its interval")
    lines += _table(["statistic", "value", "95% CI", "over"], rows, right=[1])
    lines += notes

    cohen = pairwise["cohen_kappa"]
    lines += ["", f"Cohen's kappa per annotator pair (at least {cohen['min_overlap']} shared response pairs)"]
    if cohen["pairs"]:
        shown = sorted(cohen["pairs"], key=lambda pair: -pair["shared_units"])[:max_pairs]
        shown.sort(key=lambda pair: pair["annotators"])
        lines += _table(
            ["annotator", "annotator", "kappa", "shared"],
            ([*pair["annotators"], _fmt(pair["kappa"]), str(pair["shared_units"])] for pair in shown),
            right=[2, 3],
        )
        if len(cohen["pairs"]) > len(shown):
            lines.append(f"  ... {len(cohen['pairs']) - len(shown)} more pairs (see the JSON)")
        summary = cohen["summary"]
        lines.append(
            f"  {summary['n']} defined: mean {_fmt(summary['mean'])}, "
            f"min {_fmt(summary['min'])}, max {_fmt(summary['max'])}"
        )
    else:
        lines.append("  none")
    if cohen["pairs_below_min_overlap"]:
        lines.append(f"  {cohen['pairs_below_min_overlap']} pair(s) left out: fewer shared response pairs")

    ranking = report.get("ranking")
    if ranking is not None:
        lines += ["", f"Rankings ({ranking['items']} items, {ranking['items_with_overlap']} with 2+ rankings)"]
        rows = []
        ranking_notes = []
        for label, key in (("Kendall's W, mean over items", "kendall_w"), ("Kendall's tau-b, mean", "mean_tau_b")):
            stat = ranking[key]
            rows.append(
                [label, _fmt(stat["value"]), _ci(stat), f"median {_fmt(stat['median'])}", f"{stat['n_items']} items"]
            )
            if stat.get("caution"):
                ranking_notes.append(f"  {label}: {stat['caution']}, read it with its interval")
        for label, key in (
            ("sub-pair agreement, ties count", "subpair_agreement"),
            ("sub-pair agreement, without ties", "subpair_agreement_no_ties"),
        ):
            stat = ranking[key]
            rows.append([label, _fmt(stat["value"]), "", "", f"{stat['pairs']} pairs of votes"])
        lines += _table(["statistic", "value", "95% CI", "", "over"], rows, right=[1])
        lines += ranking_notes

    lines += ["", "Annotators"]
    if report["annotators"]:
        rows = []
        for row in report["annotators"]:
            time = row["median_time_ms"]["value"]
            rows.append(
                [
                    row["username"],
                    str(row["judgements"]),
                    _fmt(row["loo_agreement"]["value"]),
                    _fmt(row["mean_peer_kappa"]["value"]),
                    _fmt(row["position_bias"]["first_shown_share"], 2),
                    _fmt_p(row["position_bias"]["p_value"]),
                    _fmt(row["length_bias"]["longer_share"], 2),
                    _fmt(row["gold_accuracy"]["value"], 2),
                    "-" if time is None else f"{time / 1000:.1f}",
                    ",".join(row["flags"]),
                ]
            )
        lines += _table(
            ["annotator", "judg.", "LOO agr", "peer k", "first", "p", "longer", "gold", "median s", "flags"],
            rows,
            right=range(1, 9),
        )
        lines.append("  LOO agr: agreement with the other annotators' plurality; peer k: mean Cohen's kappa vs peers;")
        lines.append("  first/longer: share of picks of the first-shown / longer response (p: binomial test vs 0.5);")
        lines.append(
            f"  flags: low_agreement (LOO agr < {parameters['low_agreement_below']}), "
            f"position_bias (p < {parameters['position_bias_p']}), too_fast (median < {parameters['too_fast_ms'] / 1000:g} s)"
        )
    else:
        lines.append("  none")

    contested = report["contested"]
    lines += [
        "",
        f"Contested response pairs (majority share < {contested['threshold']:g} or no unique majority): "
        f"{contested['total']} of {contested['units_with_overlap']} with 2+ votes",
    ]
    if contested["items"]:
        lines += _table(
            ["task", "external id", "A vs B", "A/tie/B", "majority", "entropy"],
            (
                [
                    str(item["task_id"]) if source is None else "-",
                    item["external_id"] or "-",
                    " vs ".join(name or "?" for name in item["sources"]) if any(item["sources"]) else "-",
                    f"{item['votes']['a']}/{item['votes']['tie']}/{item['votes']['b']}",
                    _fmt(item["majority_share"], 2),
                    _fmt(item["entropy_bits"], 2),
                ]
                for item in contested["items"]
            ),
            right=[0, 4, 5],
        )
        if contested["total"] > len(contested["items"]):
            lines.append(f"  ... {contested['total'] - len(contested['items'])} more (raise contested_limit)")
    return "\n".join(lines) + "\n"
