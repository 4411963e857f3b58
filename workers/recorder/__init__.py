"""The recorder: every event on voice.> into the SQL event log."""
