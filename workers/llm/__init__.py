"""The llm stage: replies streamed as tokens and speakable sentences, memory from the log."""
