"""The exception tree. Every message names the input it is about and what to do next."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """What another library's exception says, for a message of ours: its first line, at most `limit` characters
    (the exception's type when it says nothing)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A configuration file or value is invalid; the pipeline does not start."""


class SourceError(PipelineError):
    """A stream cannot be opened, read or decoded."""


class SourceRefused(SourceError):
    """The server answered and refused the stream (unauthorised, forbidden, not found): retrying soon cannot
    help, so a live stream retries slowly (`pipeline.sources.worker.REFUSED_MAX_S`)."""


class CorruptPacket(SourceError):
    """One packet could not be decoded (damaged media); the reader skips it and counts it."""


class EngineError(PipelineError):
    """A model cannot be loaded or run by the chosen inference engine."""


class SinkError(PipelineError):
    """A sink (tracker, storage, output) failed on a frame or an event."""


class EventRefused(SinkError):
    """An output refused one event for good (its content is at fault, not the output's state: a webhook's 413 or
    422, a value the database cannot hold): retrying cannot help, so the outbox sets it aside in its dead letters
    at once and goes on with the next."""


class StreamExists(ConfigError):
    """A stream with that id is already running."""


class NoSuchItem(ConfigError):
    """No stream, zone, line or alert rule has that id or name."""


class NoSuchStream(NoSuchItem):
    """No running stream has that id."""


class RestartRequired(PipelineError):
    """A change touches what a running pipeline cannot change (the detector, the tracker, runtime settings)."""


class FileChanged(PipelineError):
    """The config file was edited since it was last applied: reload it before changing it through the API."""


class NoConfigFile(PipelineError):
    """The pipeline was not started from a config file (a config made in code): there is no file to reload."""


class PartiallyApplied(PipelineError):
    """A change was applied except for some parts, which the message names (a reload tries them again)."""
