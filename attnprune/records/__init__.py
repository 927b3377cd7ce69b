"""Results files and verdicts, a leaf that any layer may use.

- :mod:`~attnprune.records.results`   atomic results files stamped with their provenance
- :mod:`~attnprune.records.verdicts`  the "Claims and verdicts" table and its rule
"""
