"""Real servers for tests (HTTP receiver, MQTT broker, PostgreSQL); each skips cleanly when its program is absent."""
