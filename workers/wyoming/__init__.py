"""The Wyoming bridge: the pipeline as Wyoming services (asr, tts, handle) for Home Assistant.

A Wyoming client is an endpoint (`wyoming`): each request is a conversation of it, published
on the bus as its input (audio, a transcript, text to speak) and answered from the workers'
events, recorded and traced like any other. The bridge loads no model.
"""
