"""kantata-import: billing schedules from Excel or CSV into Kantata OX billing milestones."""

__version__ = "0.1.0"
