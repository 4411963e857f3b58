"""The web gateway: a browser tab as an endpoint ("web"), served with its page.

One WebSocket is one tab is one conversation. Its microphone frames go through the endpoint
runtime's `Capture` (the mic worker's end-pointing), and it is the speaker of its
conversations through the runtime's `Player`, with a sink that streams the reply's PCM to the
tab and learns from the tab how much of it was played.
"""
