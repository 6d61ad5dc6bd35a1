"""Batch jobs over a fleet dataset for engines beyond one machine (Spark); each is one
standalone file that imports nothing from migprof, so a cluster needs only the file."""
