"""Speaker worker: plays reply audio (WAV sink or sound card), reports what was heard, barge-in."""
