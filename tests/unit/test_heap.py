"""The collector settings a batchd process runs with (``batchd.heap``)."""

from __future__ import annotations

import subprocess
import sys

# In a child process: a freeze lasts for the life of the process, and this one runs the suite.
PROBE = """
import gc
from batchd.heap import YOUNG_THRESHOLD, tune_collector
import batchd.app  # what `batchd serve` has imported when it tunes the collector
tune_collector()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_threshold()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert len(gc.get_objects()) < 1_000, len(gc.get_objects())
"""


def test_what_start_up_made_is_left_out_of_collections_and_the_young_are_collected_less_often() -> (
    None
):
    subprocess.run([sys.executable, "-c", PROBE], check=True)
