"""Text-to-speech worker: reply sentences in, streamed audio chunks out."""
