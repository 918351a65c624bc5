"""The path of a log line after `remote.logstream`: routed per rank (`routing`), kept in bounded buffers (`buffers`)."""
