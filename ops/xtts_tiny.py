"""A tiny, randomly initialised XTTS v2, built from coqui-tts's own classes, in the release layout.

`python -m ops.xtts_tiny DIR` writes DIR/config.json, model.pth, vocab.json and
speakers_xtts.pth, the four files of the published XTTS v2 folder, so the real loading code
(`Xtts.load_checkpoint`), the real tokenizer, GPT, perceiver, speaker encoder and HiFi-GAN
decoder all run. IT SPEAKS NOISE: the weights are random. It proves the code path (loading,
latents, streaming, interrupting), never the voice.

What is shrunk and what is not:
- the GPT: 1 layer, 2 heads, width 64 (the release: 30 layers, 16 heads, width 1024);
- its audio tokens are capped (`max_audio_tokens`): a random GPT rarely emits its stop token,
  so every sentence runs to the cap (each audio token is 1024 samples at 22.05 kHz, ~46 ms);
- the HiFi-GAN decoder and the speaker encoder keep the release's sizes (their shapes are
  fixed in coqui-tts); their timings are real;
- the vocabulary: coqui's bundled tortoise tokenizer (`TTS/tts/utils/assets/tortoise/
  tokenizer.json`) plus [START] and the language tokens of the release ([en], [zh-cn], ...).

Needs coqui-tts and torch (`sh ops/install.sh --xtts`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RELEASE_LANGUAGES = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu",
    "ko", "ja", "hi",
)  # fmt: skip
"""Languages of the XTTS v2 release (its config.json `languages`)."""

DEFAULT_MAX_AUDIO_TOKENS = 48
"""Audio tokens a sentence runs to (~2.2 s of noise): 2-3 streamed chunks of 20 tokens."""
TOKEN_SAMPLES = 1024
"""Input samples (22.05 kHz) per GPT audio token (gpt_code_stride_len)."""


def tiny_vocab() -> dict:
    """coqui's bundled BPE tokenizer plus the special and language tokens XTTS v2 expects."""
    import TTS

    base = Path(TTS.__file__).parent / "tts" / "utils" / "assets" / "tortoise" / "tokenizer.json"
    vocab = json.loads(base.read_text())
    ids = vocab["model"]["vocab"]
    for token in ("[START]", *(f"[{lang}]" for lang in RELEASE_LANGUAGES)):
        if token in ids:
            continue
        new_id = max(ids.values()) + 1
        ids[token] = new_id
        vocab["added_tokens"].append(
            {
                "id": new_id,
                "special": True,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
            }
        )
    return vocab


def build(folder: Path, max_audio_tokens: int = DEFAULT_MAX_AUDIO_TOKENS, seed: int = 0) -> Path:
    """Write a tiny random XTTS v2 into `folder` (created); returns the folder."""
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig
    from TTS.tts.models.xtts import Xtts

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_vocab()))
    width = 64
    args = XttsArgs(
        gpt_layers=1,
        gpt_n_heads=2,
        gpt_n_model_channels=width,
        # The GPT generates at most gpt_max_audio_tokens - 3 (conditioning, start, stop).
        gpt_max_audio_tokens=max_audio_tokens + 3,
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_use_perceiver_resampler=True,
        gpt_code_stride_len=1024,
        decoder_input_dim=width,
        d_vector_dim=512,
        input_sample_rate=22050,
        output_sample_rate=24000,
        output_hop_length=256,
        cond_d_vector_in_each_upsampling_layer=True,
        kv_cache=True,
    )
    # The release's inference settings (its config.json), so the adapter reads real values.
    config = XttsConfig(
        model_args=args,
        audio=XttsAudioConfig(sample_rate=22050, output_sample_rate=24000),
        languages=list(RELEASE_LANGUAGES),
        temperature=0.75,
        length_penalty=1.0,
        repetition_penalty=5.0,
        top_k=50,
        top_p=0.85,
        gpt_cond_len=30,
        gpt_cond_chunk_len=4,
        max_ref_len=30,
        sound_norm_refs=False,
    )
    # Xtts(config) builds its GPT only once it knows the vocabulary size: load it first, as
    # load_checkpoint does.
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    torch.manual_seed(seed)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    # One stock speaker, as the release ships (speakers_xtts.pth: name -> latents).
    gpt_latent = torch.randn(1, 32, width)
    speaker_embedding = torch.nn.functional.normalize(torch.randn(1, 512), dim=1).unsqueeze(-1)
    torch.save(
        {"Tiny Noise": {"gpt_cond_latent": gpt_latent, "speaker_embedding": speaker_embedding}},
        folder / "speakers_xtts.pth",
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.xtts_tiny", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--max-audio-tokens", type=int, default=DEFAULT_MAX_AUDIO_TOKENS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    folder = build(args.folder, args.max_audio_tokens, args.seed)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
