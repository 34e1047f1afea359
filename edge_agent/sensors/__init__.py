"""In-store sensor nodes (ESPHome on ESP32): door beams, PIR presence, load-cell shelves.

``config`` holds the ``sensors:`` section of the agent config (kept free of
heavy imports so ``edge_agent.config`` can load it), ``messages`` the payload
contract with the firmware in ``firmware_configs/``, ``ingest`` the MQTT
subscriber that validates and stores what the nodes send, ``fusion`` the rollup
section and health checks that put sensors beside the cameras.
"""
