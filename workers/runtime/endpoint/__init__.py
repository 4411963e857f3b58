"""What every endpoint shares: audio in (sources, voice activity, end-pointing) and audio
out (sinks, what the listener heard).

An endpoint is where a conversation's audio comes from and where its reply is heard: the
local device, a file run, a browser tab, a Wyoming client. The mic and speaker workers, the
web gateway and the Wyoming bridge are all built from these pieces, so endpointing and
"how much was heard" mean the same thing everywhere.
"""
