"""Evaluation reports: the classification report, figures, predictions, paired comparison."""

from imblab.reports.paired import format_paired, paired_compare
from imblab.reports.predictions import load_predictions, save_predictions
from imblab.reports.report import report_rows, write_reports

__all__ = [
    "format_paired",
    "load_predictions",
    "paired_compare",
    "report_rows",
    "save_predictions",
    "write_reports",
]
