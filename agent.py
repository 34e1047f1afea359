#!/usr/bin/env python3
"""`python agent.py …` is the same as `edge-agent …`."""

from edge_agent.cli import main

if __name__ == "__main__":
    main()
