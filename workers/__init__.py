"""Workers of the voice pipeline. Each subpackage is one service; `runtime` is what they share."""
