"""``python -m edge_agent.hq …``: the HQ commands without loading the store agent's
video stack (ingest workers start in a fraction of the time and memory)."""

import logging

from .cli import hq

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
hq(prog_name="edge-agent hq")
