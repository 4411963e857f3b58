"""Streaming speech-to-text on faster-whisper: stt.transcript-partial / stt.transcript."""
