"""Event outputs the outbox delivers to: webhook, MQTT and the JSONL event log."""
