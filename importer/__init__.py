"""kantata-import: billing schedules from Excel or CSV into Kantata OX billing milestones."""
