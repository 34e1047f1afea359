"""Headquarters side: reference consumers of the stores' MQTT feed."""
