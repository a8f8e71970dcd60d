"""What a run leaves behind: the results workbook (streamed or at the end), totals, the template."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.results.history import kept_results as kept_results
    from importer.results.history import undated as undated
    from importer.results.report import MISSING_SHEET as MISSING_SHEET
    from importer.results.report import Cut as Cut
    from importer.results.report import Money as Money
    from importer.results.report import RunInfo as RunInfo
    from importer.results.report import all_issues as all_issues
    from importer.results.report import check_output as check_output
    from importer.results.report import cut_note as cut_note
    from importer.results.report import default_output as default_output
    from importer.results.report import in_words as in_words
    from importer.results.report import outcome_columns as outcome_columns
    from importer.results.report import write_results as write_results
    from importer.results.streaming import StreamedResults as StreamedResults
    from importer.results.template import check_template_path as check_template_path
    from importer.results.template import write_template as write_template
    from importer.results.totals import ProjectTotal as ProjectTotal
    from importer.results.totals import decimals_for as decimals_for
    from importer.results.totals import format_units as format_units
    from importer.results.totals import project_totals as project_totals

_HOMES = {
    "Cut": "report",
    "Money": "report",
    "ProjectTotal": "totals",
    "RunInfo": "report",
    "MISSING_SHEET": "report",
    "StreamedResults": "streaming",
    "all_issues": "report",
    "check_output": "report",
    "check_template_path": "template",
    "cut_note": "report",
    "decimals_for": "totals",
    "default_output": "report",
    "format_units": "totals",
    "kept_results": "history",
    "in_words": "report",
    "project_totals": "totals",
    "outcome_columns": "report",
    "undated": "history",
    "write_results": "report",
    "write_template": "template",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
