"""Microphone/file source, VAD end-pointing, mic.* events."""
