"""Edge smart-store agent: counts people on the store box, keeps the counts in
SQLite, and sends summaries to headquarters over MQTT."""

__version__ = "0.1.0"
