"""Store analytics on top of tracks: counting rules, zones, dwell, shelf
interactions, occupancy, heatmaps. Pure rules and metrics live apart from the
SQLite writer (``recorder``) and the rollup sections (``sections``)."""
