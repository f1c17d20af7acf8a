"""A real local HTTP server for webhook tests (it lives in samples.local_services; the demo uses it too).

    server = RecordingHttpServer().start()
    server.url("/hook")          # http://127.0.0.1:PORT/hook
    server.status = 500          # answer every POST with 500 (nothing is recorded)
    server.stop(); server.start()  # same port again
    server.wait_for(3, timeout=5)  # -> list of Received
"""
from samples.local_services import Received, RecordingHttpServer, free_port

__all__ = ["Received", "RecordingHttpServer", "free_port"]
