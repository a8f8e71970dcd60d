"""Reading and checking a schedule file: sheet and header row, exact cells, the row schema. No HTTP."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.schedule.cells import DEFAULT_OPTIONS as DEFAULT_OPTIONS
    from importer.schedule.cells import MAX_EXACT_FLOAT_INT as MAX_EXACT_FLOAT_INT
    from importer.schedule.cells import CellProblem as CellProblem
    from importer.schedule.cells import ParseOptions as ParseOptions
    from importer.schedule.cells import as_text as as_text
    from importer.schedule.cells import currency_decimals as currency_decimals
    from importer.schedule.cells import currency_marks as currency_marks
    from importer.schedule.cells import is_blank as is_blank
    from importer.schedule.cells import mark_fits as mark_fits
    from importer.schedule.cells import parse_amount as parse_amount
    from importer.schedule.cells import parse_id as parse_id
    from importer.schedule.cells import subunit as subunit
    from importer.schedule.columns import BY_NAME as BY_NAME
    from importer.schedule.columns import EXT as EXT
    from importer.schedule.columns import EXT_FIELDS as EXT_FIELDS
    from importer.schedule.columns import EXT_REQUIRED as EXT_REQUIRED
    from importer.schedule.columns import FIELDS as FIELDS
    from importer.schedule.columns import IDENTITY as IDENTITY
    from importer.schedule.columns import LOCAL_ONLY as LOCAL_ONLY
    from importer.schedule.columns import OUTCOME_COLUMNS as OUTCOME_COLUMNS
    from importer.schedule.columns import REQUIRED as REQUIRED
    from importer.schedule.columns import Field as Field
    from importer.schedule.columns import column_index as column_index
    from importer.schedule.columns import column_letter as column_letter
    from importer.schedule.columns import normalise_header as normalise_header
    from importer.schedule.limits import EXCEL_COLUMNS as EXCEL_COLUMNS
    from importer.schedule.limits import columns_over as columns_over
    from importer.schedule.loader import RawSchedule as RawSchedule
    from importer.schedule.loader import check_schedule as check_schedule
    from importer.schedule.loader import load_schedule as load_schedule
    from importer.schedule.prefetch import ReadAhead as ReadAhead
    from importer.schedule.prefetch import start_prefetch as start_prefetch
    from importer.schedule.schema import Validated as Validated
    from importer.schedule.schema import validate_rows as validate_rows

_HOMES = {
    "BY_NAME": "columns",
    "CellProblem": "cells",
    "DEFAULT_OPTIONS": "cells",
    "EXCEL_COLUMNS": "limits",
    "EXT": "columns",
    "EXT_FIELDS": "columns",
    "EXT_REQUIRED": "columns",
    "Field": "columns",
    "FIELDS": "columns",
    "LOCAL_ONLY": "columns",
    "MAX_EXACT_FLOAT_INT": "cells",
    "IDENTITY": "columns",
    "OUTCOME_COLUMNS": "columns",
    "ParseOptions": "cells",
    "REQUIRED": "columns",
    "RawSchedule": "loader",
    "ReadAhead": "prefetch",
    "Validated": "schema",
    "as_text": "cells",
    "check_schedule": "loader",
    "column_index": "columns",
    "column_letter": "columns",
    "columns_over": "limits",
    "currency_decimals": "cells",
    "currency_marks": "cells",
    "is_blank": "cells",
    "parse_id": "cells",
    "load_schedule": "loader",
    "mark_fits": "cells",
    "normalise_header": "columns",
    "parse_amount": "cells",
    "start_prefetch": "prefetch",
    "subunit": "cells",
    "validate_rows": "schema",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
