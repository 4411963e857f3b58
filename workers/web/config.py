"""Web gateway settings (prefix WEB_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEB_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    """WEB_HOST: address the page is served on (loopback: only this machine's browsers)."""
    port: int = 8765
    """WEB_PORT: its port (0 = any free port; the URL printed says which)."""
    token: str = ""
    """WEB_TOKEN: the secret every request carries (`?token=`); `just web` makes a new one
    at each start and prints it in the page's URL. Empty = refuse every request."""
    max_tabs: int = 8
    """WEB_MAX_TABS: conversations (tabs) served at once; more are refused."""
    max_concurrent: int = 8
    """WEB_MAX_CONCURRENT: replies played at once (of different tabs)."""
    turn: str = "smart"
    """WEB_TURN: when a tab's turn ends, as MIC_TURN for the mic: "smart" (Smart Turn v3.2,
    with the stt's transcript at the pause) or "vad" (a fixed 400 ms of silence)."""
    ack_wait_s: float = 5.0
    """WEB_ACK_WAIT_S: like SPEAKER_ACK_WAIT_S, for the replies this gateway plays."""
